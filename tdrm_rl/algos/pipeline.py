"""The advantage stage as one call: rewards on tokens (verifiable, dense PRM, KL), then the estimator."""

from __future__ import annotations

import torch
from torch import Tensor

from tdrm_rl.algos.estimators import EstimatorOutput, group_zscore
from tdrm_rl.algos.losses import kl_penalty
from tdrm_rl.algos.registry import get_adv_estimator
from tdrm_rl.algos.rewards import group_zscore_steps, process_step_rewards, token_rewards

__all__ = ["build_token_rewards", "compute_advantages"]


def build_token_rewards(batch, reward_cfg, policy_cfg, sequence_reward: Tensor, rule: Tensor | None = None) -> Tensor:
    """token_rewards [B, L] for the estimator.

    Without dense rewards the (already blended) `sequence_reward` [B] sits on the last token. With
    `reward.dense` the PRM enters as step rewards instead: w_rule * rule at the end plus w_prm * d_i
    at step ends, each source z-scored within its group first when `reward.normalize`; `rule` [B] is the
    policy's rule reward (the outcome plus any format reward; None = batch.outcome). With
    `policy.kl_mode == "reward"`, -kl_coef * KL(pi_old || pi_ref) lands on every token.
    """
    step_rewards = None
    final = sequence_reward
    if reward_cfg.dense != "none":
        rule = (batch.outcome if rule is None else rule).float()
        steps = process_step_rewards(batch.step_logits, batch.step_mask, reward_cfg.dense)
        if reward_cfg.normalize:
            rule = group_zscore(rule, batch.group_ids)
            steps = group_zscore_steps(steps, batch.step_mask, batch.group_ids)
        final, step_rewards = reward_cfg.w_rule * rule, reward_cfg.w_prm * steps
    kl = None
    if policy_cfg.kl_mode == "reward" and policy_cfg.kl_coef > 0:
        sampled = batch.old_logprobs if batch.old_logprobs is not None else batch.rollout_logprobs
        kl = kl_penalty(sampled, batch.ref_logprobs, policy_cfg.kl_estimator)
    return token_rewards(final, batch.response_mask, step_rewards, batch.step_ends, batch.step_mask,
                         kl, policy_cfg.kl_coef)


def compute_advantages(batch, cfg, sequence_reward: Tensor, rule: Tensor | None = None
                       ) -> tuple[EstimatorOutput, Tensor]:
    """(estimator output, token_rewards) for `cfg.algorithm.estimator`. cfg is the RunConfig; `rule`: the policy's
    rule reward for dense rewards (build_token_rewards)."""
    rewards = build_token_rewards(batch, cfg.reward, cfg.policy, sequence_reward, rule)
    out = get_adv_estimator(cfg.algorithm.estimator)(batch, rewards, cfg.algorithm)
    return out, rewards


def advantage_metrics(out: EstimatorOutput, token_rewards: Tensor, response_mask: Tensor) -> dict[str, float]:
    mask = response_mask != 0
    adv = out.advantages[mask]
    metrics = {"advantage/mean": float(adv.mean()) if adv.numel() else 0.0,
               "advantage/abs_mean": float(adv.abs().mean()) if adv.numel() else 0.0,
               "reward/token_sum_mean": float(torch.where(mask, token_rewards, 0.0).sum(1).mean())}
    if out.returns is not None:
        metrics["advantage/gae_return_mean"] = float(out.returns.sum() / (out.returns != 0).sum().clamp(min=1))
    return metrics
