"""Offline rollout files (`tdrm-rl rollouts`): N solutions per problem, their steps and outcome,
optionally Monte-Carlo step labels. One JSON object per line, one line per trajectory:

    problem_id   int        trajectories with the same id answer the same problem
    prompt       str        the model input
    answer       str        the reference answer
    response     str        the sampled solution
    prompt_ids   [int]      token ids of the prompt, as generated (no re-tokenisation later)
    response_ids [int]      token ids of the response
    steps        [str]      the response split at the step delimiter
    outcome      0 | 1      verifiable reward
    pred         str|null   the extracted final answer (majority vote groups on it)
    mc_success   [int]      (with --mc-samples k) per step: how many of k completions from that
                            prefix reached the right answer; the terminal step holds k * outcome
    mc_samples   int        k
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from tdrm_rl.data.batch import Batch
from tdrm_rl.data.collate import TokenTexts, collate
from tdrm_rl.algos.td import terminal_mask

__all__ = ["Trajectory", "write_jsonl", "read_jsonl", "records_batch", "mc_step_labels", "step_success_table",
           "step_prefix_lengths", "exact_step_labels"]


@dataclass
class Trajectory:
    problem_id: int
    prompt: str
    answer: str
    response: str
    prompt_ids: list[int]
    response_ids: list[int]
    steps: list[str]
    outcome: float
    pred: Optional[str] = None
    mc_success: Optional[list[int]] = None
    mc_samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


_REQUIRED = ("problem_id", "prompt", "answer", "response", "prompt_ids", "response_ids", "steps", "outcome")


def write_jsonl(path: str, records: list[Trajectory]) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(asdict(r)) + "\n")
    os.replace(tmp, path)
    return path


def read_jsonl(path: str) -> list[Trajectory]:
    """Read a rollouts file; a malformed line is a ValueError that names the file and line."""
    if not os.path.isfile(path):
        raise ValueError(f"rollouts file not found: {path}")
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            missing = [k for k in _REQUIRED if k not in row] if isinstance(row, dict) else list(_REQUIRED)
            if missing:
                raise ValueError(f"{path}:{n}: missing field(s) {missing}; write the file with `tdrm-rl rollouts`")
            known = {k: row[k] for k in Trajectory.__dataclass_fields__ if k in row}
            out.append(Trajectory(**known))
    if not out:
        raise ValueError(f"rollouts file {path} holds no trajectories")
    return out


def records_batch(records: list[Trajectory], tokenizer, delimiter: str = "\n\n",
                  token_texts: TokenTexts | None = None) -> Batch:
    """One Batch over the trajectories (group ids = problem ids), with outcomes and, when present, the
    per-step MC success counts in meta["mc_success"] (padded to S later by `step_success_table`)."""
    token_texts = token_texts or TokenTexts(tokenizer)
    meta = {"answer": [r.answer for r in records], "response_text": [r.response for r in records]}
    batch = collate([r.prompt_ids for r in records], [r.response_ids for r in records],
                    [r.problem_id for r in records], token_texts, pad_id=tokenizer.pad_token_id,
                    delimiter=delimiter, meta=meta)
    batch.outcome = torch.tensor([float(r.outcome) for r in records], dtype=torch.float32)
    return batch


def step_success_table(records: list[Trajectory], num_steps: int) -> tuple[Tensor, Tensor]:
    """MC success counts [B, S] and samples per row k [B] from the records (0 where missing)."""
    counts = torch.zeros(len(records), num_steps)
    k = torch.tensor([float(r.mc_samples) for r in records])
    for b, r in enumerate(records):
        if r.mc_success is None:
            raise ValueError(f"trajectory {b} (problem {r.problem_id}) has no Monte-Carlo labels; "
                             "write the file with `tdrm-rl rollouts --mc-samples K`")
        row = torch.tensor(r.mc_success[:num_steps], dtype=torch.float32)
        counts[b, :row.numel()] = row
    return counts, k


def mc_step_labels(success: Tensor, samples: Tensor, step_mask: Tensor, outcome: Tensor,
                   hard: bool = True) -> Tensor:
    """Monte-Carlo step labels (the ScalarPRM targets), Math-Shepherd style.

        hard: label_i = 1 if any of the k completions from prefix s_i reached the right answer, else 0
        soft: label_i = success_i / k
        the terminal step holds the answer, so its label is the verifiable outcome itself.

    success [B, S] counts, samples [B] k, step_mask [B, S], outcome [B] -> labels [B, S], 0 on padding.
    """
    k = samples.to(success.dtype).clamp(min=1)[:, None]
    labels = (success > 0).to(success.dtype) if hard else (success / k).clamp(0.0, 1.0)
    labels = torch.where(terminal_mask(step_mask), outcome.to(success.dtype)[:, None].expand_as(labels), labels)
    return torch.where(step_mask != 0, labels, torch.zeros_like(labels))


def step_prefix_lengths(batch: Batch) -> list[list[int]]:
    """Per row, the response length (tokens) up to and including each step's end token."""
    out = []
    for ends, mask in zip(batch.step_ends.tolist(), batch.step_mask.tolist()):
        out.append([e - batch.prompt_len + 1 for e, m in zip(ends, mask) if m])
    return out


def exact_step_labels(records: list[Trajectory], task, step_mask: Tensor) -> Optional[Tensor]:
    """The task's exact step labels [B, S] (1 = every step so far is right), 0 on padding; None when the
    task has none (only the embedded arith task knows the right value after every step).

    Measurement only: the `exact` PRM objective uses them as a diagnostic ceiling, no compared method does.
    """
    out = step_label_table(task, [r.prompt for r in records], [r.steps for r in records],
                           [r.answer for r in records], step_mask)
    if out is None:
        return None
    labels, ok = out
    if not bool(ok.all()):
        b = int((~ok).nonzero()[0])
        raise ValueError(f"trajectory {b} (problem {records[b].problem_id}): its text steps and step ends differ")
    return labels


def step_label_table(task, prompts: list[str], steps: list[list[str]], answers: list, step_mask: Tensor
                     ) -> Optional[tuple[Tensor, Tensor]]:
    """(labels [B, S], ok [B]) from the task's `step_labels`; a row whose text steps do not match its step
    ends (a max_steps cut) is left out (ok False, labels 0). None when the task has no step labels."""
    fn = getattr(task, "step_labels", None)
    if fn is None:
        return None
    labels = torch.zeros(step_mask.shape)
    ok = torch.zeros(step_mask.shape[0], dtype=torch.bool)
    for b, (prompt, row_steps, answer) in enumerate(zip(prompts, steps, answers)):
        row = fn(prompt, row_steps, answer)
        if row is None:
            return None
        T = int((step_mask[b] != 0).sum())
        if len(row) == T:
            labels[b, :T] = torch.tensor(row, dtype=torch.float32)
            ok[b] = True
    return labels, ok
