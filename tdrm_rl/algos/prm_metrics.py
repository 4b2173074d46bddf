"""Diagnostics of PRM quality: does it rank right answers above wrong ones, is it calibrated?

All functions return plain Python floats (NaN when the quantity is undefined for the batch),
ready for a metrics logger.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tdrm_rl.algos.td import num_steps, terminal_mask

__all__ = ["ranking_accuracy", "calibration", "value_outcome_stats"]


def ranking_accuracy(scores: Tensor, outcome: Tensor, group_ids: Tensor) -> float:
    """Pairwise ranking accuracy within groups (a grouped AUC).

    Over all pairs (j, k) in the same group with outcome_j = 1 and outcome_k = 0:

        acc = mean( 1[s_j > s_k] + 0.5 * 1[s_j = s_k] )

    scores [B], outcome [B] in {0, 1}, group_ids [B] -> float, NaN when no such pair exists.
    """
    scores = scores.detach().float()
    correct = outcome != 0  # [B]
    same_group = group_ids[:, None] == group_ids[None, :]  # [B, B]
    pair = same_group & correct[:, None] & ~correct[None, :]  # [B, B]  row correct, col incorrect
    n_pairs = int(pair.sum().item())
    if n_pairs == 0:
        return math.nan
    diff = scores[:, None] - scores[None, :]  # [B, B]
    credit = (diff > 0).float() + 0.5 * (diff == 0).float()
    return float(credit[pair].sum().item() / n_pairs)


def calibration(values: Tensor, labels: Tensor, bins: int = 10) -> dict[str, float]:
    """Expected calibration error (equal-width bins on [0, 1]) and Brier score.

        bin(v) = min(floor(v * bins), bins - 1)
        ece    = sum_b (n_b / N) * | mean_{v in b} v - mean_{v in b} label |
        brier  = mean( (v - label)^2 )

    values [N] probabilities, labels [N] in [0, 1] -> {"ece", "brier"}; NaN for N = 0.
    """
    if bins < 1:
        raise ValueError(f"calibration needs bins >= 1, got {bins}")
    values = values.detach().double().flatten()
    labels = labels.detach().double().flatten()
    N = values.numel()
    if N == 0:
        return {"ece": math.nan, "brier": math.nan}

    bin_idx = (values * bins).floor().long().clamp(0, bins - 1)  # [N]
    zeros = torch.zeros(bins, dtype=torch.float64, device=values.device)
    count = zeros.index_add(0, bin_idx, torch.ones_like(values))  # [bins]
    value_sum = zeros.index_add(0, bin_idx, values)
    label_sum = zeros.index_add(0, bin_idx, labels)
    # n_b/N * |mean v - mean y| = |sum v - sum y| / N; empty bins contribute 0.
    ece = (value_sum - label_sum).abs().sum() / N
    brier = ((values - labels) ** 2).mean()
    return {"ece": float(ece.item()), "brier": float(brier.item())}


def _mean_or_nan(x: Tensor) -> float:
    return float(x.mean().item()) if x.numel() else math.nan


def value_outcome_stats(step_values: Tensor, step_mask: Tensor, outcome: Tensor) -> dict[str, float]:
    """How the PRM's step values relate to the verified outcome.

    step_values [B, S] (probabilities V(s_i)), step_mask [B, S], outcome [B] in {0, 1}.
    Rows with no valid step are ignored. Keys:

        final_value_correct / _incorrect  mean V at the terminal step, by outcome
        final_value_gap                   final_value_correct - final_value_incorrect
        step_value_correct / _incorrect   mean V over all valid steps, by outcome
        final_auc                         P(V_final(correct) > V_final(incorrect)) over the batch
                                          (ties 0.5; groups ignored)
        final_abs_error                   mean |V_final - outcome|
    """
    step_values = step_values.detach().float()
    valid = step_mask != 0  # [B, S]
    has_steps = num_steps(step_mask) > 0  # [B]
    correct = (outcome != 0) & has_steps  # [B]
    incorrect = (outcome == 0) & has_steps

    final_value = torch.where(terminal_mask(step_mask), step_values, torch.zeros_like(step_values)).sum(1)  # [B]
    correct_steps = valid & correct[:, None]  # [B, S]
    incorrect_steps = valid & incorrect[:, None]

    stats = {
        "final_value_correct": _mean_or_nan(final_value[correct]),
        "final_value_incorrect": _mean_or_nan(final_value[incorrect]),
        "step_value_correct": _mean_or_nan(step_values[correct_steps]),
        "step_value_incorrect": _mean_or_nan(step_values[incorrect_steps]),
        "final_auc": ranking_accuracy(
            final_value[has_steps], outcome[has_steps], torch.zeros_like(outcome[has_steps], dtype=torch.long)
        ),
        "final_abs_error": _mean_or_nan((final_value - outcome.float()).abs()[has_steps]),
    }
    stats["final_value_gap"] = stats["final_value_correct"] - stats["final_value_incorrect"]
    return stats
