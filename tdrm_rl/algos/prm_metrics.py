"""Diagnostics of PRM quality: does it rank right answers above wrong ones, is it calibrated?

All functions return plain Python floats (NaN when the quantity is undefined for the batch),
ready for a metrics logger.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tdrm_rl.algos.td import num_steps, terminal_mask

__all__ = ["ranking_accuracy", "calibration", "value_outcome_stats", "auc", "step_auc", "step_auc_by_index",
           "first_error_index", "predicted_first_error", "first_error_metrics", "step_quality",
           "FIRST_ERROR_THRESHOLD"]

# ProcessBench's rule: the first step whose (undiscounted) value is below 0.5 is the first error.
FIRST_ERROR_THRESHOLD = 0.5


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


# ----- exact step labels: step AUC, first error --------------------------------------------------------

def auc(scores: Tensor, labels: Tensor) -> float:
    """P(score of a positive > score of a negative), ties 0.5 (Mann-Whitney, average ranks).

    scores [N], labels [N] in {0, 1} -> float, NaN without both classes.
    """
    scores = scores.detach().double().flatten()
    pos = labels.flatten() != 0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    uniq, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    first_rank = torch.cumsum(counts, 0) - counts + 1  # 1-based rank of the first of each tie group
    avg_rank = (first_rank + (counts.double() - 1) / 2)[inverse]  # [N]
    return float((avg_rank[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def step_auc(values: Tensor, labels: Tensor, mask: Tensor) -> float:
    """AUC of the step values, sound (label 1) vs unsound (0) prefixes, pooled over every masked-in step.

    values [B, S], labels [B, S], mask [B, S] -> float.
    """
    valid = mask != 0
    return auc(values[valid], labels[valid])


def step_auc_by_index(values: Tensor, labels: Tensor, mask: Tensor) -> list[float]:
    """step_auc restricted to step index i, for i = 0..S-1 (NaN where a class is missing)."""
    return [step_auc(values[:, i:i + 1], labels[:, i:i + 1], mask[:, i:i + 1]) for i in range(values.shape[1])]


def first_error_index(labels: Tensor, mask: Tensor) -> Tensor:
    """Index of the first unsound step per row, -1 when every step is sound. [B, S] -> [B] long."""
    bad = (labels == 0) & (mask != 0)
    S = labels.shape[1]
    idx = torch.where(bad, torch.arange(S)[None, :].expand_as(labels), torch.full_like(labels, S, dtype=torch.long))
    first = idx.min(1).values if S else torch.full((labels.shape[0],), S, dtype=torch.long)
    return torch.where(first == S, torch.full_like(first, -1), first)


def predicted_first_error(values: Tensor, mask: Tensor, threshold: float = FIRST_ERROR_THRESHOLD,
                          discount: float = 1.0) -> Tensor:
    """The first error step a PRM's values point to, -1 for "no error".

    Rule: the first step i whose value, undiscounted to the end of the solution, is below `threshold`:

        V_i / discount^(T-1-i) < threshold

    A TD-PRM trained with discount gamma predicts V_i ~ gamma^(T-1-i) * P(right | s_i), so dividing by the
    discount puts every step on the scale of a success probability; exact-label, Monte-Carlo and ORM PRMs
    use discount 1 (ProcessBench's rule: the first value below 0.5).
    values [B, S] in [0, 1], mask [B, S] -> [B] long.
    """
    return first_error_index((undiscounted(values, mask, discount) >= threshold).long(), mask)


def undiscounted(values: Tensor, mask: Tensor, discount: float) -> Tensor:
    """V_i / discount^(T-1-i): a discounted value put back on the scale of a success probability."""
    T = (mask != 0).sum(1, keepdim=True)
    steps_to_end = (T - 1 - torch.arange(values.shape[1])[None, :]).clamp(min=0).double()
    return values.double() / (float(discount) ** steps_to_end)


def first_error_metrics(values: Tensor, labels: Tensor, mask: Tensor, threshold: float = FIRST_ERROR_THRESHOLD,
                        discount: float = 1.0) -> dict[str, float]:
    """ProcessBench-style first-error scores over solutions (rows with at least one step):

        error_acc    share of solutions with an error whose first error step is found exactly
        correct_acc  share of error-free solutions called error-free (-1)
        f1           harmonic mean of the two
    """
    has = (mask != 0).any(1)
    want = first_error_index(labels, mask)[has]
    got = predicted_first_error(values, mask, threshold, discount)[has]
    err, ok = want >= 0, want < 0
    error_acc = float((got[err] == want[err]).double().mean()) if bool(err.any()) else math.nan
    correct_acc = float((got[ok] == -1).double().mean()) if bool(ok.any()) else math.nan
    f1 = (2 * error_acc * correct_acc / (error_acc + correct_acc)) if error_acc + correct_acc > 0 else 0.0
    return {"first_error_acc": error_acc, "first_error_correct_acc": correct_acc, "first_error_f1": f1,
            "first_error_threshold": threshold, "first_error_discount": discount}


def step_quality(values: Tensor, labels: Tensor, step_mask: Tensor, scores: dict[str, Tensor], outcome: Tensor,
                 group_ids: Tensor, discount: float = 1.0) -> dict:
    """Every exact-label measure of one PRM on one batch of solutions.

    values [B, S] step values in [0, 1]; labels [B, S] exact soundness of each prefix; step_mask [B, S];
    scores: aggregation name -> [B] solution scores (for the within-problem pairwise accuracy against the
    outcome); outcome [B]; group_ids [B] problem ids. Keys: step_auc, step_auc_by_index, pairwise/<agg>,
    across/<agg> (the same pairs over the whole batch), first_error_* (see first_error_metrics), and
    step_auc_undiscounted: the pooled step AUC of V_i / discount^(T-1-i) (= step_auc for discount 1); a
    TD-PRM's raw values shrink with the distance to the answer, which the pooled AUC mixes with soundness.
    """
    out: dict = {"step_auc": step_auc(values, labels, step_mask),
                 "step_auc_undiscounted": step_auc(undiscounted(values, step_mask, discount), labels, step_mask),
                 "step_auc_by_index": step_auc_by_index(values, labels, step_mask)}
    for name, s in scores.items():
        out[f"pairwise/{name}"] = ranking_accuracy(s, outcome, group_ids)
        out[f"across/{name}"] = auc(s, outcome)
    out.update(first_error_metrics(values, labels, step_mask, discount=discount))
    return out
