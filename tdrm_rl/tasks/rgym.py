"""`reasoning_gym:<name>`: any reasoning-gym dataset, scored by the dataset's own scorer.

Train and held-out problems come from two differently seeded generators; a train draw whose
question is also a held-out question is redrawn, so the splits never share a question. The
response's final answer (its last `\\boxed{}`, or what `data.answer_extraction` reads) goes to the scorer; a
score of 1.0 counts as right (reasoning-gym gives partial credit, e.g. 0.01 for a well-formed wrong number: that
is wrong here).
Scorers run in a checker child process with a deadline (`tdrm_rl.tasks.bounded`).
"""

from __future__ import annotations

import random
from typing import Any, Optional

from .answers import MAX_ANSWER_CHARS, as_text, extract_answer
from .base import DataError, Problem
from .bounded import shared_checker

# Virtual size of the train generator: reasoning-gym items are generated on demand from seed + index.
TRAIN_POOL = 100_000
# Held-out problems use this seed offset (train uses data.seed itself).
EVAL_SEED_OFFSET = 1_000_003


class GymAnswer(str):
    """The oracle answer as text, carrying the reasoning-gym entry its scorer may need (metadata).

    It prints, compares and serialises as the answer text; pickling keeps the entry, so Ray
    workers and the checker child score with the full entry.
    """

    entry: dict

    def __new__(cls, entry: dict) -> "GymAnswer":
        obj = super().__new__(cls, str(entry["answer"]))
        obj.entry = entry
        return obj

    def __reduce__(self):
        return GymAnswer, (self.entry,)


def _import_reasoning_gym():
    try:
        import reasoning_gym
    except ImportError as e:
        raise DataError("data.task=reasoning_gym:... needs the reasoning-gym package: "
                        "pip install 'tdrm-rl[real]' (or pip install reasoning-gym)") from e
    return reasoning_gym


_datasets: dict[tuple, Any] = {}


def _dataset(name: str, seed: int, size: int, options: tuple) -> Any:
    """A cached reasoning-gym dataset (the checker child builds its own once per dataset)."""
    options = tuple((k, v) for k, v in options)  # pairs arrive as JSON lists in the checker child
    key = (name, seed, size, repr(options))
    if key not in _datasets:
        _datasets[key] = _import_reasoning_gym().create_dataset(name, seed=seed, size=size, **dict(options))
    return _datasets[key]


def warm_in_child(name: str, options: tuple) -> bool:
    """Import reasoning-gym and build the scorer's dataset once, before any check runs against a deadline."""
    _dataset(name, 0, 1, options)
    return True


def score_in_child(name: str, options: tuple, answer: Optional[str], entry: dict) -> float:
    """The dataset's scorer on one answer (runs in the checker child)."""
    return float(_dataset(name, 0, 1, options).score_answer(answer, entry))


class ReasoningGymTask:
    needs_template = True

    def __init__(self, dataset: str, seed: int = 0, eval_size: int = 500, options: Optional[dict] = None,
                 verify_timeout_s: float = 5.0, answer_extraction: str = "boxed") -> None:
        rg = _import_reasoning_gym()
        from reasoning_gym.factory import DATASETS

        if not dataset or dataset not in DATASETS:
            close = [n for n in sorted(DATASETS) if dataset and (dataset in n or n in dataset)][:5]
            hint = f" (did you mean {close}?)" if close else f" ({len(DATASETS)} datasets, e.g. gsm_symbolic, " \
                                                           "basic_arithmetic, chain_sum)"
            raise DataError(f"data.task: unknown reasoning-gym dataset {dataset!r}{hint}")
        self.name = f"reasoning_gym:{dataset}"
        self.dataset = dataset
        self.options = tuple(sorted((options or {}).items()))
        self.seed = seed
        self.eval_size = eval_size
        self.verify_timeout_s = verify_timeout_s
        self.answer_extraction = answer_extraction
        try:
            self._train = rg.create_dataset(dataset, seed=seed, size=TRAIN_POOL, **dict(self.options))
        except (TypeError, AssertionError, ValueError) as e:
            raise DataError(f"data.task_options for reasoning-gym dataset {dataset!r} rejected: {e}") from None
        self._eval: list[Problem] = []
        self._eval_questions: set[str] = set()

    @staticmethod
    def _problem(entry: dict) -> Problem:
        return Problem(prompt=entry["question"], answer=GymAnswer(entry))

    def eval_problems(self, n: int) -> list[Problem]:
        """The first `n` held-out problems (a generator seeded apart from the train one)."""
        if n > len(self._eval):
            ds = _import_reasoning_gym().create_dataset(self.dataset, seed=self.seed + EVAL_SEED_OFFSET,
                                                        size=max(n, self.eval_size, 1), **dict(self.options))
            self._eval = [self._problem(ds[i]) for i in range(len(ds))]
            self._eval_questions = {p.prompt for p in self._eval}
        return self._eval[:n]

    def train_set(self, size: int) -> Optional[list[Problem]]:
        """0: the endless seeded stream; N: a fixed pool of N train problems (never held out), for epochs."""
        if size == 0:
            return None
        return self.sample_train(size, random.Random(f"rgym-train-{self.seed}"))

    def sample_train(self, n: int, rng: random.Random) -> list[Problem]:
        """`n` train problems drawn with `rng`; never a held-out question."""
        if not self._eval_questions:
            self.eval_problems(self.eval_size)
        out: list[Problem] = []
        for _ in range(100 * n + 100):
            if len(out) == n:
                break
            entry = self._train[rng.randrange(TRAIN_POOL)]
            if entry["question"] not in self._eval_questions:
                out.append(self._problem(entry))
        if len(out) < n:
            raise DataError(f"{self.name}: cannot draw train problems outside the held-out set; lower data.eval_size")
        return out

    def verify(self, response: Any, answer: Any) -> float:
        """1.0 if the dataset's scorer gives the final answer of `response` full marks, else 0.0. Never raises."""
        try:
            text = as_text(response)
            if text is None or answer is None:
                return 0.0
            pred = self.extract_answer(text)
            if pred is None or len(pred) > MAX_ANSWER_CHARS:
                return 0.0
            entry = answer.entry if isinstance(answer, GymAnswer) else {"answer": str(answer), "metadata": {}}
            checker = shared_checker(f"reasoning-gym:{self.dataset}:{self.options}", self.verify_timeout_s,
                                     warmup=(warm_in_child, (self.dataset, self.options)))
            score = checker.call(score_in_child, self.dataset, self.options, pred.strip(), entry)
            return 1.0 if score is not None and score >= 1.0 else 0.0
        except Exception:  # a verifier scores garbage as wrong, it never crashes a rollout
            return 0.0

    def extract_answer(self, response: str) -> Optional[str]:
        """The final answer `verify` hands to the scorer (majority vote groups on it)."""
        return extract_answer(response, self.answer_extraction)
