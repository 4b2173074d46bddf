"""Smoothness of a PRM's value along a trajectory, as the TDRM paper defines it:

    smoothness = mean over consecutive-state pairs (s_t, s_{t+1}) of |V(s_{t+1}) - V(s_t)| / d(s_t, s_{t+1})

Lower is smoother. The paper leaves d unspecified, so two named variants are offered:
    "per_step":  d = 1 for every step
    "per_token": d = the number of tokens of step t+1 (the text between the two states)
Plus the mean absolute TD error per step index: how far V_i is from its own n-step TD target.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tdrm_rl.algos.td import nstep_targets

__all__ = ["SMOOTHNESS_VARIANTS", "step_token_counts", "smoothness", "td_error_by_step"]

SMOOTHNESS_VARIANTS = ("per_step", "per_token")


def step_token_counts(step_ends: Tensor, step_mask: Tensor, prompt_len: int) -> Tensor:
    """Tokens in each step: the first step starts after the prompt, step i after step i-1's end.

    step_ends [B, S] absolute columns, step_mask [B, S] -> counts [B, S] float, 0 on padding.
    """
    prev = torch.cat([torch.full_like(step_ends[:, :1], prompt_len - 1), step_ends[:, :-1]], dim=1)
    counts = (step_ends - prev).to(torch.float32)
    return torch.where(step_mask != 0, counts, torch.zeros_like(counts))


def smoothness(values: Tensor, step_mask: Tensor, distance: Tensor | None = None) -> float:
    """Mean of |V_{i+1} - V_i| / d_{i+1} over pairs of consecutive valid steps (NaN if there are none).

    values [B, S] in [0, 1]; step_mask [B, S]; distance [B, S] (d of the step that leads INTO state
    i, e.g. `step_token_counts`), or None for d = 1.
    """
    if values.shape[1] < 2:
        return float("nan")
    pair = (step_mask[:, 1:] != 0) & (step_mask[:, :-1] != 0)  # [B, S-1]
    diff = (values[:, 1:] - values[:, :-1]).abs()
    if distance is not None:
        diff = diff / distance[:, 1:].clamp(min=1e-8)
    n = int(pair.sum())
    return float(diff[pair].sum() / n) if n else float("nan")


def td_error_by_step(values: Tensor, step_mask: Tensor, outcome: Tensor, n: int, gamma: float) -> Tensor:
    """Mean |V_i - y_i| per step index i, with y the n-step TD target bootstrapped from V itself.

    values [B, S], step_mask [B, S], outcome [B] -> [S] (NaN at an index no row reaches).
    """
    targets = nstep_targets(values, None, step_mask, outcome, n, gamma)
    valid = (step_mask != 0).float()
    err = (values - targets).abs() * valid
    count = valid.sum(0)
    return torch.where(count > 0, err.sum(0) / count.clamp(min=1), torch.full_like(count, float("nan")))
