"""Advantage estimators. Each registered estimator has one signature:

    estimator(batch, token_rewards, cfg) -> EstimatorOutput(advantages [B, L], returns [B, S] | None)

batch: the `Batch` (response_mask, group_ids, step_ends, step_mask, step_logits for PPO's critic);
token_rewards [B, L]: every reward of a response placed on its tokens (see `algos.rewards`);
cfg: anything with `adv_eps`, `gamma`, `lam` (the AlgorithmConfig).

The sequence reward of a response is R_b = sum_t token_rewards[b, t].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from tdrm_rl.algos.gae import step_gae
from tdrm_rl.algos.masked import masked_whiten
from tdrm_rl.algos.registry import register_adv_estimator
from tdrm_rl.algos.step_axis import last_response_index, spread_steps_to_tokens, sum_tokens_per_step

__all__ = ["EstimatorOutput", "group_zscore", "group_mean", "grpo_advantages", "drgrpo_advantages",
           "rloo_advantages", "broadcast_sequence_advantages", "discounted_returns", "ppo_start_values"]


@dataclass
class EstimatorOutput:
    advantages: Tensor  # [B, L], 0 off the response
    returns: Optional[Tensor] = None  # [B, S] step value targets (PPO), else None


# ---------------------------------------------------------------------------------------------
# group maths (pure, per-response scalars)
# ---------------------------------------------------------------------------------------------


def group_zscore(x: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """Z-score of each element within its group:  (x - mean_G) / (std_G + eps).

    std_G is the population std (divide by |G|, not |G| - 1): a group of two responses with
    rewards 0 and 1 gives advantages -1 and +1 (up to eps). A group whose values are all equal
    (including a group of one) gives exactly 0. Groups may be non-contiguous and their ids any
    integers.

    x [B] float, group_ids [B] long -> z [B].
    """
    if not x.is_floating_point():
        x = x.float()
    _, group = torch.unique(group_ids, return_inverse=True)  # [B] in 0..G-1
    G = int(group.max().item()) + 1 if group.numel() else 0
    zeros = torch.zeros(G, dtype=x.dtype, device=x.device)

    count = zeros.index_add(0, group, torch.ones_like(x))  # [G]
    mean = zeros.index_add(0, group, x) / count  # [G]
    centered = x - mean[group]  # [B]
    std = (zeros.index_add(0, group, centered**2) / count).sqrt()  # [G]

    # Rounding in the mean can leave ~1e-17 residues; a constant group must give exactly 0.
    g_max = zeros.scatter_reduce(0, group, x, reduce="amax", include_self=False)
    g_min = zeros.scatter_reduce(0, group, x, reduce="amin", include_self=False)
    constant = (g_max == g_min)[group]  # [B]

    z = centered / (std[group] + eps)
    return torch.where(constant, torch.zeros_like(z), z)


def _group_sum_count(x: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(sum_{G(j)} x, |G(j)|) for every element j.  x [B], group_ids [B] -> ([B], [B])."""
    _, group = torch.unique(group_ids, return_inverse=True)
    zeros = torch.zeros(int(group.max().item()) + 1 if group.numel() else 0, dtype=x.dtype, device=x.device)
    count = zeros.index_add(0, group, torch.ones_like(x))
    return zeros.index_add(0, group, x)[group], count[group]


def group_mean(x: Tensor, group_ids: Tensor) -> Tensor:
    """mean_{G(j)} x for every element j.  x [B], group_ids [B] -> [B]."""
    total, count = _group_sum_count(x, group_ids)
    return total / count


def grpo_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO outcome advantage, one scalar per response:

        A_j = (R_j - mean_{G(j)} R) / (std_{G(j)} R + eps)

    with the population std (see `group_zscore`). rewards [B], group_ids [B] long -> adv [B].
    """
    return group_zscore(rewards, group_ids, eps)


def drgrpo_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO without the std division (Dr. GRPO, Liu et al. 2025):  A_j = R_j - mean_{G(j)} R.

    Dividing by std_G turns tiny reward differences inside a group (e.g. only the PRM term varies
    because every answer is right) into full-size advantages; centring alone keeps them small.
    `eps` is unused and kept for a uniform signature.
    """
    return rewards.float() - group_mean(rewards.float(), group_ids)


def rloo_advantages(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """REINFORCE leave-one-out: A_j = R_j - mean of the *other* responses of j's group.

    = |G| / (|G| - 1) * (R_j - mean_G R). A group of one has no baseline and gives 0.
    """
    r = rewards.float()
    total, count = _group_sum_count(r, group_ids)
    others = (total - r) / (count - 1).clamp(min=1)
    return torch.where(count > 1, r - others, torch.zeros_like(r))


def broadcast_sequence_advantages(adv: Tensor, response_mask: Tensor) -> Tensor:
    """Put a per-response advantage on every response token: A[b, t] = adv[b] * response_mask[b, t].

    adv [B], response_mask [B, L] -> [B, L] (0 off the response).
    """
    return adv[:, None] * response_mask.to(adv.dtype)


def discounted_returns(token_rewards: Tensor, response_mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go over tokens: G_t = r_t + gamma * G_{t+1}, 0 off the response.  [B, L] -> [B, L].

    A masked token inside the response counts as a zero-reward step: a reward after a hole of k tokens reaches
    earlier tokens discounted by gamma^(distance including the hole); hole positions read 0 and rewards in them
    are ignored. (Today's collate never makes holes; tests/unit/algos/test_gae.py pins this.)
    """
    r = torch.where(response_mask != 0, token_rewards.float(), torch.zeros_like(token_rewards.float()))
    out = torch.zeros_like(r)
    running = r.new_zeros(r.shape[0])
    for t in reversed(range(r.shape[1])):
        running = r[:, t] + gamma * running
        out[:, t] = running
    return out * response_mask.to(out.dtype)


def sequence_rewards(token_rewards: Tensor, response_mask: Tensor) -> Tensor:
    """R_b = sum of token rewards over the response.  [B, L] -> [B]."""
    return torch.where(response_mask != 0, token_rewards.float(), torch.zeros_like(token_rewards.float())).sum(1)


# ---------------------------------------------------------------------------------------------
# registered estimators (uniform signature)
# ---------------------------------------------------------------------------------------------


@register_adv_estimator("grpo", needs_groups=True)
def grpo_estimator(batch, token_rewards: Tensor, cfg) -> EstimatorOutput:
    """GRPO: group z-score of the sequence reward on every token."""
    adv = grpo_advantages(sequence_rewards(token_rewards, batch.response_mask), batch.group_ids, cfg.adv_eps)
    return EstimatorOutput(broadcast_sequence_advantages(adv, batch.response_mask))


@register_adv_estimator("drgrpo", needs_groups=True)
def drgrpo_estimator(batch, token_rewards: Tensor, cfg) -> EstimatorOutput:
    """Dr. GRPO: group-centred sequence reward on every token."""
    adv = drgrpo_advantages(sequence_rewards(token_rewards, batch.response_mask), batch.group_ids)
    return EstimatorOutput(broadcast_sequence_advantages(adv, batch.response_mask))


@register_adv_estimator("rloo", needs_groups=True)
def rloo_estimator(batch, token_rewards: Tensor, cfg) -> EstimatorOutput:
    """RLOO: sequence reward minus the leave-one-out group mean, on every token."""
    adv = rloo_advantages(sequence_rewards(token_rewards, batch.response_mask), batch.group_ids)
    return EstimatorOutput(broadcast_sequence_advantages(adv, batch.response_mask))


@register_adv_estimator("reinforce_pp")
def reinforce_pp_estimator(batch, token_rewards: Tensor, cfg) -> EstimatorOutput:
    """REINFORCE++: token reward-to-go (discount cfg.gamma), whitened over all response tokens of the batch."""
    returns = discounted_returns(token_rewards, batch.response_mask, cfg.gamma)
    return EstimatorOutput(masked_whiten(returns, batch.response_mask))


@register_adv_estimator("reinforce_pp_baseline", needs_groups=True)
def reinforce_pp_baseline_estimator(batch, token_rewards: Tensor, cfg) -> EstimatorOutput:
    """REINFORCE++ with a group baseline: the group-mean sequence reward is subtracted at the last
    response token before the reward-to-go and the global whitening."""
    mask = batch.response_mask
    baseline = group_mean(sequence_rewards(token_rewards, mask), batch.group_ids)
    shifted = token_rewards.float().clone()
    shifted.scatter_add_(1, last_response_index(mask)[:, None], -baseline[:, None])
    returns = discounted_returns(shifted, mask, cfg.gamma)
    return EstimatorOutput(masked_whiten(returns, mask))


def ppo_start_values(step_rewards: Tensor, values: Tensor, step_mask: Tensor, group_ids: Tensor,
                     gamma: float) -> Tensor:
    """V of the bare prompt [B], which the PRM does not score, from the critic's own Bellman backup:

        V(prompt) ~= E_{first step}[ r_0 + gamma * V_0 ]      (V_0 -> 0 if the first step is the last)

    estimated by the leave-one-out mean over the other responses to the same prompt, so a response's
    own first step never enters its own baseline. A group of one uses its own backup.
    """
    has_next = step_mask[:, 1] != 0 if step_mask.shape[1] > 1 else torch.zeros_like(step_mask[:, 0], dtype=torch.bool)
    backup = step_rewards[:, 0].float() + gamma * torch.where(has_next, values[:, 0].float(),
                                                              torch.zeros_like(values[:, 0].float()))
    total, count = _group_sum_count(backup, group_ids)
    return torch.where(count > 1, (total - backup) / (count - 1).clamp(min=1), backup)


@register_adv_estimator("ppo")
def ppo_estimator(batch, token_rewards: Tensor, cfg) -> EstimatorOutput:
    """PPO with the PRM as critic: step-level GAE, each step's advantage on each of its tokens.

    Step rewards are the token rewards summed per step (so the verifiable reward sits in the last
    step, dense process rewards at their steps). The critic value of the state before step i is
    V_{i-1} = sigmoid(step_logits[i-1]); before step 0 it is `ppo_start_values`. Advantages are
    whitened over all response tokens of the batch. Returns R_i = A_i + V(before step i) [B, S].
    """
    if batch.step_logits is None:
        raise ValueError("the ppo estimator needs batch.step_logits (the PRM's step values)")
    step_r = sum_tokens_per_step(token_rewards.float(), batch.step_ends, batch.step_mask, batch.response_mask)
    values = torch.sigmoid(batch.step_logits.detach().float())
    start = ppo_start_values(step_r, values, batch.step_mask, batch.group_ids, cfg.gamma)
    before = torch.cat([start[:, None], values[:, :-1]], dim=1)  # V of the state each step starts from
    adv, returns = step_gae(step_r, before, batch.step_mask, cfg.gamma, cfg.lam)
    tokens = spread_steps_to_tokens(adv, batch.step_ends, batch.step_mask, batch.response_mask)
    return EstimatorOutput(masked_whiten(tokens, batch.response_mask), returns)
