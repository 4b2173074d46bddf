"""Token-level rewards: the verifiable reward at the last response token, optional dense process
rewards from the PRM at step-end tokens, optional KL penalty on every token.

Dense process rewards (any estimator) from the PRM's step values V_i = sigmoid(logit_i):

    value_diff:  d_i = V_i - V_{i-1}   (d_0 = 0: the PRM scores no bare-prompt state)
    value:       d_i = V_i

Each source is normalised on its own before the weighted sum (when asked), so w_rule and w_prm
trade off comparable scales.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tdrm_rl.algos.estimators import group_zscore
from tdrm_rl.algos.step_axis import last_response_index, place_at_step_ends

__all__ = ["DENSE_MODES", "process_step_rewards", "group_zscore_steps", "token_rewards"]

DENSE_MODES = ("none", "value_diff", "value")


def process_step_rewards(step_logits: Tensor, step_mask: Tensor, mode: str) -> Tensor:
    """Dense step rewards d [B, S] from PRM logits (0 on padding)."""
    if mode not in DENSE_MODES[1:]:
        raise ValueError(f"unknown dense reward mode {mode!r}; known: {', '.join(DENSE_MODES[1:])}")
    values = torch.sigmoid(step_logits.detach().float())
    if mode == "value_diff":
        prev = torch.cat([values[:, :1], values[:, :-1]], dim=1)  # V_{i-1}, with V_{-1} := V_0
        values = values - prev
    return torch.where(step_mask != 0, values, torch.zeros_like(values))


def group_zscore_steps(x: Tensor, step_mask: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """Z-score each valid step value over all valid steps of its group's responses; 0 on padding.  [B, S]."""
    valid = step_mask != 0
    flat_groups = group_ids[:, None].expand_as(x)[valid]
    out = torch.zeros_like(x)
    out[valid] = group_zscore(x[valid], flat_groups, eps).to(x.dtype)
    return out


def token_rewards(outcome_reward: Tensor, response_mask: Tensor, step_rewards: Tensor | None = None,
                  step_ends: Tensor | None = None, step_mask: Tensor | None = None,
                  kl: Tensor | None = None, kl_coef: float = 0.0) -> Tensor:
    """r [B, L] = outcome_reward at the last response token + step_rewards at step-end tokens - kl_coef * kl.

    outcome_reward [B], response_mask [B, L], step_rewards/step_ends/step_mask [B, S], kl [B, L].
    Zero off the response.
    """
    B, L = response_mask.shape
    mask = response_mask.to(torch.float32)
    r = torch.zeros(B, L, dtype=torch.float32, device=response_mask.device)
    r.scatter_(1, last_response_index(response_mask)[:, None], outcome_reward.float()[:, None])
    if step_rewards is not None:
        r = r + place_at_step_ends(step_rewards.float(), step_ends, step_mask, L)
    if kl is not None and kl_coef:
        r = r - kl_coef * kl.detach().float()
    return r * mask
