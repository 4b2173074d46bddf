"""What every task shares: the Problem record, the task interface, bad-data errors, a stable split.

A task yields problems (a prompt and a reference answer) for training and a fixed held-out set
for evaluation, and scores a response against a reference with `verify` -> 0.0 or 1.0, never raising.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Optional, Protocol


@dataclass
class Problem:
    """One task instance.

    `prompt` is the text the policy sees. Tasks with `needs_template = True` put the bare question
    here and `tdrm_rl.tasks.prompts.PromptedTask` renders it with the model's chat template (keeping the
    bare question in `question`); the embedded arith task writes its own compact prompt. `solution`
    is a worked solution where the source has one ("" otherwise).
    """

    prompt: str
    answer: Any
    solution: str = ""
    question: str = ""


class Task(Protocol):
    """The interface the driver, SFT and evaluation use."""

    name: str
    needs_template: bool  # True: `prompt` is a bare question to wrap in the model's chat template

    def sample_train(self, n: int, rng: random.Random) -> list[Problem]: ...

    def train_set(self, size: int) -> Optional[list[Problem]]:
        """The fixed training pool the sampler walks in epochs (first `size`, 0 = all), or None for a stream."""

    def eval_problems(self, n: int) -> list[Problem]: ...

    def verify(self, response: Any, answer: Any) -> float: ...


class DataError(ValueError):
    """Unusable task data (a bad file row, an unknown dataset name). The message names the source."""


def stable_unit(key: str) -> float:
    """A fixed number in [0, 1) for `key` (hashlib, not Python's salted hash()): split assignment."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64
