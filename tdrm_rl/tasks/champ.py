"""`champ`: the 270 CHAMP competition problems (package `champ-dataset`), checked with math-verify.

The split is fixed: a stable hash of each problem's identifier sends about one problem in five to
the held-out set (the same problems on every machine and for every seed). Reference answers are
the dataset's answer text; a few are free-form ("C(10, 5), or equivalently 252"), and math-verify
compares against the expression it extracts from them.
"""

from __future__ import annotations

from typing import Any

from .answers import SplitMathTask
from .base import DataError, Problem, stable_unit

HELDOUT_FRACTION = 0.2
DATASET_VERSION = "v0"


def load_champ() -> list[dict[str, Any]]:
    """Every CHAMP problem as {id, question, answer, steps}, in the dataset's natural order."""
    try:
        import champ_dataset
    except ImportError as e:
        raise DataError("data.task=champ needs the champ-dataset package: pip install 'tdrm-rl[real]' "
                        "(or pip install champ-dataset)") from e
    dataset = champ_dataset.load(DATASET_VERSION)
    dataset.sort()
    return [{"id": p.identifier, "question": p.text, "answer": p.answer,
             "steps": [s.text for s in (p.solution.steps if p.solution and p.solution.steps else [])]}
            for p in dataset.problems.values()]


def is_heldout(identifier: str) -> bool:
    return stable_unit(f"champ:{identifier}") < HELDOUT_FRACTION


class ChampTask(SplitMathTask):
    name = "champ"
    needs_template = True

    def __init__(self, delimiter: str = "\n\n", verify_timeout_s: float = 5.0,
                 answer_extraction: str = "boxed") -> None:
        self.verify_timeout_s = verify_timeout_s
        self.answer_extraction = answer_extraction
        train, heldout = [], []
        for row in load_champ():
            solution = delimiter.join(row["steps"] + [f"\\boxed{{{row['answer']}}}"])
            problem = Problem(prompt=row["question"], answer=row["answer"], solution=solution)
            (heldout if is_heldout(row["id"]) else train).append(problem)
        self.train, self.heldout = train, heldout
