"""Held-out evaluation of a policy: greedy accuracy, sampled accuracy, pass@k and majority@k.

One code path for `train`'s in-run evaluation (RLTrainer.evaluate, through the rollout actors) and `tdrm-rl eval`
(an in-process rollout worker): both hand `evaluate_policy` their `generate(prompts, n, sampling)`.

    greedy accuracy   mean over problems of verify(greedy response)
    sampled accuracy  mean over problems and samples of verify(response at the temperature)
    pass@k, maj@k     over the N sampled responses per problem, in the N // k disjoint blocks of k
                      (tdrm_rl/prm_tools/bon.py): any right / the most frequent final answer right
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from tdrm_rl.models.generation import Generated
from tdrm_rl.prm_tools.bon import bon_sizes, majority_vote_accuracy, pass_at_k
from tdrm_rl.tasks.answers import final_answer

GenerateFn = Callable[[list[str], int, dict], Generated]


@dataclass
class EvalSettings:
    samples: int = 1  # sampled responses per problem; pass@k and maj@k for k = 1, 2, 4 ... samples when > 1
    temperature: Optional[float] = 1.0  # of the sampled responses; None = greedy only
    # responses per generate call (0 = all in one call), each call a tick of the progress bar: rollout.micro_batch_size
    # keeps HF generate's batches what one call would make them
    chunk: int = 0
    progress: bool = False

    def check(self) -> None:
        if self.samples < 1:
            raise ValueError(f"eval: samples must be >= 1, got {self.samples}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"eval: temperature must be >= 0, got {self.temperature}")


@dataclass
class EvalResult:
    metrics: dict[str, float]  # eval/greedy_accuracy, eval/sampled_accuracy, eval/pass@k, eval/maj@k
    greedy: Generated
    greedy_outcome: Tensor  # [P]
    sampled: Optional[Generated] = None  # prompt-major: problem i's samples at i*N .. i*N + N - 1
    sampled_outcome: Optional[Tensor] = None  # [P, N]
    sampled_preds: list[list[Optional[str]]] = field(default_factory=list)  # [P][N] final answers


def _generate(generate: GenerateFn, prompts: list[str], n: int, sampling: dict, chunk: int, bar: Any) -> Generated:
    size = max(1, chunk // n) if chunk else max(1, len(prompts))  # prompts per call
    out = Generated()
    for start in range(0, len(prompts), size):
        out.extend(generate(prompts[start:start + size], n, sampling))
        if bar is not None:
            bar.update(min(size, len(prompts) - start) * n)
    return out


def _verify(task: Any, texts: Sequence[str], answers: Sequence[Any]) -> Tensor:
    return torch.tensor([task.verify(t, a) for t, a in zip(texts, answers)], dtype=torch.float32)


def sample_metrics(outcome: Tensor, preds: Sequence[Sequence[Optional[str]]]) -> dict[str, float]:
    """Sampled accuracy, and pass@k / maj@k for k in 1, 2, 4 ... N when N > 1. outcome [P, N] in {0, 1}."""
    out = {"eval/sampled_accuracy": float(outcome.float().mean()) if outcome.numel() else 0.0}
    n = outcome.shape[1]
    if n > 1 and outcome.shape[0] > 0:
        for k in bon_sizes(n):
            out[f"eval/pass@{k}"] = pass_at_k(outcome, k)
            out[f"eval/maj@{k}"] = majority_vote_accuracy(preds, outcome, k)
    return out


def evaluate_policy(generate: GenerateFn, task: Any, problems: Sequence[Any],
                    settings: Optional[EvalSettings] = None) -> EvalResult:
    """Greedy responses, then `settings.samples` responses per problem at `settings.temperature`, all verified.

    The sampling dict names only the temperature: top_p and max_new_tokens are the rollout section's.
    """
    settings = settings or EvalSettings()
    settings.check()
    prompts = [p.prompt for p in problems]
    answers = [p.answer for p in problems]
    total = len(prompts) * (1 + (settings.samples if settings.temperature is not None else 0))
    bar = None
    if settings.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="eval", unit="response", dynamic_ncols=True)
    try:
        greedy = _generate(generate, prompts, 1, {"temperature": 0.0}, settings.chunk, bar)
        greedy_outcome = _verify(task, greedy.response_text, answers)
        metrics = {"eval/greedy_accuracy": float(greedy_outcome.mean()) if len(problems) else 0.0}
        result = EvalResult(metrics, greedy, greedy_outcome)
        if settings.temperature is None:
            return result
        n = settings.samples
        sampled = _generate(generate, prompts, n, {"temperature": settings.temperature}, settings.chunk, bar)
        flat = _verify(task, sampled.response_text, [a for a in answers for _ in range(n)])
        result.sampled, result.sampled_outcome = sampled, flat.view(len(problems), n)
        result.sampled_preds = [[final_answer(task, t) for t in sampled.response_text[i * n:(i + 1) * n]]
                                for i in range(len(problems))]
        metrics.update(sample_metrics(result.sampled_outcome, result.sampled_preds))
        return result
    finally:
        if bar is not None:
            bar.close()
