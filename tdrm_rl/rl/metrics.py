"""What a step reports: stage timings, rewards, PRM quality, response shape, throughput.

The stage names are the step's timer names; metrics appear as `timing_s/<name>`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from tdrm_rl.algos import advantage_metrics
from tdrm_rl.algos.prm_metrics import calibration, first_error_metrics, ranking_accuracy, step_auc
from tdrm_rl.algos.td import terminal_mask
from tdrm_rl.config import RunConfig
from tdrm_rl.data.batch import Batch
from tdrm_rl.data.rollout_file import step_label_table
from tdrm_rl.data.segment import split_steps
from tdrm_rl.tasks.answers import extract_answer

# One RL step, in order (StepStages.step; README "One RL step"). prm_update_before runs only with
# prm.update=online_before, rollout_wait only with trainer.async_rollout. Per run, not per step: eval.
STAGES = ("rollout", "verify", "prm_values_and_logprobs", "prm_update_before", "advantages", "update",
          "rollout_wait", "weight_sync")
RUN_STAGES = ("eval",)


class StageTimer:
    """`with timer("rollout"): ...` adds the seconds to timing_s/rollout."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"timing_s/{name}"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start


def response_counts(texts: list[str], delimiter: str, answer_extraction: str = "boxed") -> dict[str, float]:
    """Fractions of responses that are empty, have no step delimiter, or give no final answer under the task's
    data.answer_extraction (no \\boxed{} for `boxed`, no number for `last_number`, ...).

    Degenerate responses are scored (verifier 0, no PRM steps), never dropped silently."""
    n = max(len(texts), 1)
    return {
        "response/empty_frac": sum(not t.strip() for t in texts) / n,
        "response/no_delimiter_frac": sum(delimiter not in t for t in texts) / n,
        "response/no_answer_frac": sum(extract_answer(t, answer_extraction) is None for t in texts) / n,
    }


def batch_metrics(batch: Batch, prm_score: torch.Tensor, busy_s: float, delimiter: str,
                  answer_extraction: str = "boxed") -> dict[str, float]:
    """Rewards, PRM ranking and calibration, response shape, and throughput over `busy_s` seconds."""
    values = torch.sigmoid(batch.step_logits)
    final = terminal_mask(batch.step_mask)
    has_steps = batch.step_mask.sum(1) > 0
    final_values = (values * final).sum(1)[has_steps]
    cal = calibration(final_values, batch.outcome[has_steps])
    tokens = batch.num_response_tokens
    return {
        "reward/rule_mean": float(batch.outcome.mean()),
        "reward/prm_score_mean": float(prm_score.mean()),
        "reward/blended_mean": float(batch.rewards.mean()),
        "prm/ranking_accuracy": ranking_accuracy(prm_score, batch.outcome, batch.group_ids),
        "prm/final_value_ece": cal["ece"],
        "prm/final_value_brier": cal["brier"],
        "response/length_mean": tokens / len(batch),
        "response/steps_mean": float(batch.step_mask.sum(1).mean()),
        "throughput/tokens_per_s": tokens / max(busy_s, 1e-9),
        "throughput/trajectories_per_s": len(batch) / max(busy_s, 1e-9),
        **response_counts(batch.meta["response_text"], delimiter, answer_extraction),
    }


def step_label_metrics(task: Any, batch: Batch, delimiter: str, gamma: float) -> dict[str, float]:
    """With exact step labels (arith): the PRM's step AUC and first-error F1 on this step's rollouts."""
    if "prompt" not in batch.meta:
        return {}
    steps = [split_steps(t, delimiter) for t in batch.meta["response_text"]]
    table = step_label_table(task, batch.meta["prompt"], steps, batch.meta["answer"], batch.step_mask)
    if table is None:
        return {}
    labels, ok = table
    values = torch.sigmoid(batch.step_logits.float())
    mask = batch.step_mask * ok[:, None].to(batch.step_mask.dtype)
    first_error = first_error_metrics(values.double(), labels, mask, discount=gamma)
    return {"prm/step_auc": step_auc(values, labels, mask), "prm/first_error_f1": first_error["first_error_f1"]}


def step_metrics(update: dict[str, Any], seconds: dict[str, float], batch: Batch, prm_score: torch.Tensor,
                 estimate: Any, token_rewards: torch.Tensor, staleness: int, sampling: dict[str, float],
                 cfg: RunConfig, task: Any) -> dict[str, Any]:
    """Everything one step logs: the workers' update metrics, stage timings and the batch's metrics."""
    metrics = dict(update)
    metrics.update(seconds)
    metrics["rollout/staleness"] = staleness
    # Async hides the rollout inside the step: throughput is then per step, not per rollout second.
    busy = seconds["timing_s/step" if cfg.trainer.async_rollout else "timing_s/rollout"]
    metrics.update(batch_metrics(batch, prm_score, busy, cfg.data.step_delimiter, cfg.data.answer_extraction))
    metrics.update(step_label_metrics(task, batch, cfg.data.step_delimiter, cfg.prm.gamma))
    metrics.update(advantage_metrics(estimate, token_rewards, batch.response_mask))
    metrics.update(sampling)
    return metrics
