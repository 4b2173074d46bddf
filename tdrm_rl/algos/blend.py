"""Blend the verifiable (rule) reward with the PRM's opinion, one scalar per trajectory.

    R = w_rule * rule + w_prm * f(PRM)

f reads the PRM's step logits of a trajectory and reduces them to one number (`aggregate_prm`).
The paper's f is the logit of the state just before the answer step; min / mean / last are the
usual alternatives. Paper defaults: w_rule = 0.8, w_prm = 0.2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tdrm_rl.algos import group_zscore
from tdrm_rl.algos.td import num_steps

__all__ = ["AGGREGATE_MODES", "aggregate_prm", "blend_rewards"]

AGGREGATE_MODES = ("before_answer", "min", "mean", "last")


def aggregate_prm(step_logits: Tensor, step_mask: Tensor, mode: str, use_logit: bool = True) -> Tensor:
    """Reduce the per-step PRM output of each trajectory to one score.

    x_i = z_i (raw logit) if use_logit else sigmoid(z_i). With T = number of valid steps:

        before_answer: x_{max(T-2, 0)}   (the state just before the answer step; the only one if T = 1)
        min:           min_{i<T} x_i
        mean:          (1/T) sum_{i<T} x_i
        last:          x_{T-1}

    step_logits [B, S], step_mask [B, S] -> score [B]. A row with no valid step scores 0.
    """
    if mode not in AGGREGATE_MODES:
        raise ValueError(f"unknown PRM aggregate mode {mode!r}; known: {', '.join(AGGREGATE_MODES)}")
    x = step_logits if use_logit else torch.sigmoid(step_logits)  # [B, S]
    if x.shape[1] == 0:
        return x.new_zeros(x.shape[0])
    valid = step_mask != 0
    T = num_steps(step_mask)  # [B]
    has_steps = T > 0

    if mode == "before_answer" or mode == "last":
        offset = 2 if mode == "before_answer" else 1
        idx = (T - offset).clamp(min=0)  # [B]
        score = x.gather(1, idx[:, None]).squeeze(1)
    elif mode == "min":
        score = x.masked_fill(~valid, float("inf")).amin(dim=1)
    else:  # mean
        score = torch.where(valid, x, torch.zeros_like(x)).sum(dim=1) / T.clamp(min=1).to(x.dtype)
    return torch.where(has_steps, score, torch.zeros_like(score))


def blend_rewards(
    rule: Tensor,
    prm_score: Tensor,
    w_rule: float,
    w_prm: float,
    group_ids: Tensor | None = None,
    normalize: bool = False,
) -> Tensor:
    """R = w_rule * rule + w_prm * prm_score, per trajectory.

    With normalize=True each source is first z-scored within its group (`group_zscore`), so
    the weights trade off comparable scales; this needs group_ids.

    rule [B], prm_score [B], group_ids [B] long or None -> R [B].
    """
    if rule.shape != prm_score.shape:
        raise ValueError(f"rule has shape {tuple(rule.shape)} but prm_score has {tuple(prm_score.shape)}")
    rule = rule.to(prm_score.dtype) if prm_score.is_floating_point() else rule.float()
    prm_score = prm_score.to(rule.dtype)
    if normalize:
        if group_ids is None:
            raise ValueError("blend_rewards(normalize=True) needs group_ids to normalise within groups")
        rule = group_zscore(rule, group_ids)
        prm_score = group_zscore(prm_score, group_ids)
    return w_rule * rule + w_prm * prm_score
