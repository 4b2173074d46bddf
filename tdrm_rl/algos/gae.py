"""Step-level generalised advantage estimation (GAE) over the PRM's step values.

A trajectory has T steps; step i is an action taken in a state whose value is values[b, i]
(the critic's V of the state *before* step i) and earns reward rewards[b, i]. After the last
step the episode is over, so the bootstrap value there is 0:

    delta_i = r_i + gamma * V_{i+1} * [i + 1 < T] - V_i
    A_i     = delta_i + gamma * lam * A_{i+1}           (A_T = 0)
    R_i     = A_i + V_i                                  (the GAE return, a value target)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["step_gae"]


def step_gae(rewards: Tensor, values: Tensor, step_mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """GAE over ragged, prefix-contiguous steps.

    rewards [B, S], values [B, S], step_mask [B, S] -> (advantages [B, S], returns [B, S]), 0 on padding.

    Masked holes (a masked step followed by valid ones; collate never makes them) end the episode: the valid
    step before a hole gets no bootstrap value and no carried advantage from the steps after it, and each
    later run of valid steps is its own episode. Rewards and values of masked steps are ignored.
    (Token-level `estimators.discounted_returns` differs: there the discount carries across a hole.)
    """
    valid = step_mask != 0
    values = values.detach().to(rewards.dtype)
    rewards = torch.where(valid, rewards.detach(), torch.zeros_like(rewards))
    B, S = rewards.shape
    adv = torch.zeros_like(rewards)
    next_adv = rewards.new_zeros(B)
    next_value = rewards.new_zeros(B)
    for i in reversed(range(S)):
        # A padded step i+1 (i is terminal) contributes no bootstrap and no carried advantage.
        next_valid = valid[:, i + 1] if i + 1 < S else torch.zeros_like(valid[:, 0])
        carry_v = torch.where(next_valid, next_value, torch.zeros_like(next_value))
        carry_a = torch.where(next_valid, next_adv, torch.zeros_like(next_adv))
        delta = rewards[:, i] + gamma * carry_v - values[:, i]
        a_i = torch.where(valid[:, i], delta + gamma * lam * carry_a, torch.zeros_like(delta))
        adv[:, i] = a_i
        next_adv, next_value = a_i, values[:, i]
    returns = torch.where(valid, adv + values, torch.zeros_like(adv))
    return adv, returns
