"""A dataset task from a JSON-lines file: one object per line with a prompt field and an answer field.

    {"prompt": "What is 2+3? Put the answer in \\boxed{}.\\n", "answer": "5"}

Bad rows (not JSON, not an object, a field missing or not text) stop the run with an error that
names the file and line, or with `data.on_bad_row=skip` are dropped and counted (`skipped_rows`).
The verifier compares the last \\boxed{...} of a response with the answer as text (integers in
canonical form); it never evaluates anything.
"""

from __future__ import annotations

import json
import random
from typing import Any, Optional

from .arith import Problem, _canonical_int, extract_boxed


class DataError(ValueError):
    """Unusable input data; the message names the file and the line."""


def _normalize(text: str) -> Optional[str]:
    """Integers in canonical form, anything else with whitespace removed. None for over-long text."""
    if len(text) > 1000:
        return None
    as_int = _canonical_int(text)
    return as_int if as_int is not None else "".join(text.split())


def verify(response: Any, answer: Any) -> float:
    """1.0 if the last \\boxed{...} of `response` equals `answer` (see `_normalize`), else 0.0. Never raises."""
    try:
        if not isinstance(response, str) or not isinstance(answer, str):
            return 0.0
        boxed = extract_boxed(response)
        if boxed is None:
            return 0.0
        got, ref = _normalize(boxed), _normalize(answer)
        return 1.0 if got is not None and got == ref else 0.0
    except Exception:  # garbage scores as wrong, it never crashes a rollout
        return 0.0


def read_rows(path: str, prompt_key: str, answer_key: str, on_bad_row: str) -> tuple[list[Problem], int]:
    """Problems of a .jsonl file and the number of skipped bad lines (blank lines are ignored)."""
    problems: list[Problem] = []
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            problem = None
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                reason = f"not valid JSON ({e.msg if hasattr(e, 'msg') else 'nested too deeply'})"
            else:
                if not isinstance(row, dict):
                    reason = f"expected a JSON object, got {type(row).__name__}"
                else:
                    missing = [k for k in (prompt_key, answer_key)
                               if not isinstance(row.get(k), (str, int)) or isinstance(row.get(k), bool)]
                    if missing:
                        reason = f"field '{missing[0]}' is missing or not text (data.prompt_key / data.answer_key)"
                    else:
                        problem = Problem(prompt=str(row[prompt_key]), answer=str(row[answer_key]), solution="")
                        reason = ""
            if problem is not None:
                problems.append(problem)
            elif on_bad_row == "skip":
                skipped += 1
            else:
                raise DataError(f"{path} line {number}: {reason}; fix the row or set data.on_bad_row=skip")
    if not problems:
        raise DataError(f"{path}: no usable rows")
    return problems, skipped


class JsonlTask:
    """Train rows from `data.path`; held-out rows from `data.eval_path` or the tail of `data.path`."""

    name = "jsonl"

    def __init__(self, path: str, eval_path: Optional[str], prompt_key: str, answer_key: str,
                 on_bad_row: str, eval_size: int) -> None:
        rows, self.skipped_rows = read_rows(path, prompt_key, answer_key, on_bad_row)
        if eval_path:
            self.eval_rows, skipped = read_rows(eval_path, prompt_key, answer_key, on_bad_row)
            self.skipped_rows += skipped
            self.train_rows = rows
        else:
            held = min(eval_size, len(rows) - 1)
            if held < 1:
                raise DataError(f"{path}: {len(rows)} usable row(s) cannot be split into train and held-out "
                                "rows; add rows or set data.eval_path")
            self.train_rows, self.eval_rows = rows[:-held], rows[-held:]

    def train_set(self, size: int) -> list[Problem]:
        return self.train_rows[:size] if size else list(self.train_rows)

    def sample_train(self, n: int, rng: random.Random) -> list[Problem]:
        return [rng.choice(self.train_rows) for _ in range(n)]

    def eval_problems(self, n: int) -> list[Problem]:
        return self.eval_rows[:n]

    def verify(self, response: Any, answer: Any) -> float:
        return verify(response, answer)
