"""Best-of-N with a PRM: aggregate step values into one score per solution, pick the best of N.

Accuracy at N = k is averaged over the N_max // k disjoint blocks of k samples per problem
(samples [0, k), [k, 2k), ...), so every sample is used and the estimate is deterministic.
Majority vote and pass@k are computed over the same blocks, for reference.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

import torch
from torch import Tensor

from tdrm_rl.algos.blend import aggregate_prm
from tdrm_rl.algos.td import terminal_mask

__all__ = ["BON_AGGREGATIONS", "aggregate_steps", "bon_sizes", "best_of_n_accuracy", "majority_vote_accuracy",
           "pass_at_k", "bon_table"]

BON_AGGREGATIONS = ("last", "min", "mean", "product", "final")


def aggregate_steps(step_logits: Tensor, step_mask: Tensor, mode: str) -> Tensor:
    """One score per solution from its PRM step logits. V_i = sigmoid(z_i); steps i < T-1 are the
    reasoning steps, i = T-1 is the final (answer) state.

        last:    V_{T-2}, the last reasoning step (the state just before the answer)
        min:     min over the reasoning steps of V_i
        mean:    mean over the reasoning steps of V_i
        product: prod over the reasoning steps of V_i
        final:   V_{T-1}, the value of the final state

    A solution with a single step has no reasoning step: every mode then reads its final state.
    step_logits [B, S], step_mask [B, S] -> scores [B] in [0, 1]; a row with no step scores 0.
    """
    if mode not in BON_AGGREGATIONS:
        raise ValueError(f"unknown Best-of-N aggregation {mode!r}; known: {', '.join(BON_AGGREGATIONS)}")
    if mode == "last":
        return aggregate_prm(step_logits, step_mask, "before_answer", use_logit=False)
    if mode == "final":
        return aggregate_prm(step_logits, step_mask, "last", use_logit=False)
    # Reasoning steps: drop the terminal step, unless it is the only one.
    single = (step_mask != 0).sum(1, keepdim=True) <= 1
    reasoning = torch.where(terminal_mask(step_mask) & ~single, torch.zeros_like(step_mask), step_mask)
    if mode in ("min", "mean"):
        return aggregate_prm(step_logits, reasoning, mode, use_logit=False)
    log_v = torch.nn.functional.logsigmoid(step_logits.float())
    score = torch.exp(torch.where(reasoning != 0, log_v, torch.zeros_like(log_v)).sum(1))
    return torch.where((step_mask != 0).any(1), score, torch.zeros_like(score))


def bon_sizes(n_max: int) -> list[int]:
    """1, 2, 4, ... up to n_max (n_max itself is included when it is not a power of two)."""
    if n_max < 1:
        raise ValueError(f"Best-of-N needs at least one sample per problem, got {n_max}")
    sizes, k = [], 1
    while k <= n_max:
        sizes.append(k)
        k *= 2
    if sizes[-1] != n_max:
        sizes.append(n_max)
    return sizes


def _blocks(n_max: int, k: int) -> list[slice]:
    if not 1 <= k <= n_max:
        raise ValueError(f"N = {k} is outside 1..{n_max} (samples per problem)")
    return [slice(j * k, (j + 1) * k) for j in range(n_max // k)]


def best_of_n_accuracy(scores: Tensor, outcome: Tensor, k: int) -> float:
    """Accuracy of picking the highest-scored of k samples (first one on ties).

    scores [P, N], outcome [P, N] in {0, 1} -> mean over problems and blocks of the picked outcome.
    """
    picked = []
    for block in _blocks(scores.shape[1], k):
        best = scores[:, block].argmax(dim=1, keepdim=True)  # [P, 1]; argmax returns the first maximum
        picked.append(outcome[:, block].gather(1, best).squeeze(1).float())
    return float(torch.stack(picked).mean())


def majority_vote_accuracy(preds: Sequence[Sequence[Optional[str]]], outcome: Tensor, k: int) -> float:
    """Accuracy of the most frequent extracted answer among k samples (earliest on ties; a sample
    without an answer does not vote; a block with no answer at all counts as wrong)."""
    scores = []
    for block in _blocks(outcome.shape[1], k):
        for p, row in enumerate(preds):
            votes = Counter(a for a in row[block] if a is not None)
            if not votes:
                scores.append(0.0)
                continue
            top = max(votes.values())
            winner = next(a for a in row[block] if a is not None and votes[a] == top)
            j = block.start + list(row[block]).index(winner)
            scores.append(float(outcome[p, j]))
    return sum(scores) / len(scores)


def pass_at_k(outcome: Tensor, k: int) -> float:
    """Fraction of (problem, block) pairs where at least one of the k samples is right."""
    return float(torch.stack([outcome[:, b].amax(1).float() for b in _blocks(outcome.shape[1], k)]).mean())


def bon_table(scores: dict[str, Tensor], outcome: Tensor, preds: Sequence[Sequence[Optional[str]]],
              sizes: Sequence[int]) -> dict[str, list[float]]:
    """Accuracy curve per named scorer ("prm/agg" -> [acc at each N]) plus majority vote and pass@N."""
    table = {name: [best_of_n_accuracy(s, outcome, k) for k in sizes] for name, s in scores.items()}
    table["majority_vote"] = [majority_vote_accuracy(preds, outcome, k) for k in sizes]
    table["pass@N"] = [pass_at_k(outcome, k) for k in sizes]
    return table
