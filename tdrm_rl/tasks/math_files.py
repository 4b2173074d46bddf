"""`jsonl` / `parquet` tasks: math problems from a file the user supplies (`data.path`).

Rows come in one of three shapes (`data.format`; `auto` tells them apart per row: a '####' in the
answer means gsm8k, no answer field but a 'solution' means math, anything else plain; the question
is the first of 'question', 'problem', 'prompt' present):

    gsm8k  {"question": "...", "answer": "...worked steps...\\n#### 72"}   answer = text after '####'
    math   {"problem": "...", "solution": "... \\boxed{\\frac{1}{2}}"}     answer = the 'answer' field if
                                                                          present, else the last \\boxed{}
                                                                          of 'solution'
    plain  {"prompt": "...", "answer": "72"}                              answer = the field (its \\boxed{}
                                                                          content if it has one)

`data.prompt_key` / `data.answer_key` rename the question and answer fields in any format.
A bad row (not JSON, not an object, a field missing or not text, no answer to be found) stops
the run with an error naming the file and the line (jsonl) or row (parquet); with
`data.on_bad_row=skip` it is dropped and counted in `skipped_rows`. Answers are checked with
math-verify (`verify_math`), bounded in time.

Held-out problems come from `data.eval_path` when set, else they are the last `data.eval_size`
rows of `data.path` (never drawn for training).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Iterator, Optional

from .answers import MAX_ANSWER_CHARS, SplitMathTask, extract_boxed
from .base import DataError, Problem

FORMATS = ("auto", "gsm8k", "math", "plain")
# Default (question field, answer field) of each format.
FIELDS = {"gsm8k": ("question", "answer"), "math": ("problem", "answer"), "plain": ("prompt", "answer")}
_GSM8K_MARK = "####"
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations: "48/2=<<48/2=24>>24"

log = logging.getLogger(__name__)


class BadRow(ValueError):
    """One unusable row; the loader adds the file and line."""


def _records(path: str, kind: str) -> Iterator[tuple[str, Any]]:
    """(where, row) for each record: where is 'line N' (jsonl) or 'row N' (parquet); row may be a BadRow."""
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        except ImportError as e:
            raise DataError("data.task=parquet needs pyarrow: pip install 'tdrm-rl[real]'") from e
        except Exception as e:  # not a parquet file, truncated, ...
            raise DataError(f"{path}: cannot read as parquet: {str(e).splitlines()[0]}") from None
        for number, row in enumerate(rows, start=1):
            yield f"row {number}", row
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                yield f"line {number}", BadRow(f"not valid JSON ({getattr(e, 'msg', 'nested too deeply')})")


def _detect(row: dict, prompt_key: Optional[str], answer_key: Optional[str]) -> tuple[str, str]:
    """(format, question field) of a row in `auto` mode."""
    q_key = prompt_key or next((k for k in ("question", "problem", "prompt") if k in row), None)
    if q_key is None:
        raise BadRow(f"no question field among its fields {sorted(row)[:8]}; set data.prompt_key "
                     "(and data.format: gsm8k | math | plain)")
    a_key = answer_key or "answer"
    if _GSM8K_MARK in str(row.get(a_key, "")):
        return "gsm8k", q_key
    if row.get(a_key) is None and "solution" in row:
        return "math", q_key
    return "plain", q_key


def _text(row: dict, key: str, what: str) -> str:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        got = "missing" if value is None else f"not text ({type(value).__name__})"  # parquet: null
        raise BadRow(f"{what} field '{key}' is {got}")
    text = str(value).strip()
    if not text:
        raise BadRow(f"{what} field '{key}' is empty")
    return text


def _steps_solution(steps: list[str], answer: str, delimiter: str) -> str:
    return delimiter.join([s for s in steps if s.strip()] + [f"\\boxed{{{answer}}}"])


def parse_row(row: Any, fmt: str, prompt_key: Optional[str], answer_key: Optional[str],
              delimiter: str = "\n\n") -> Problem:
    """One record -> Problem, or BadRow with the reason."""
    if isinstance(row, BadRow):
        raise row
    if not isinstance(row, dict):
        raise BadRow(f"expected an object with fields, got {type(row).__name__}")
    if fmt == "auto":
        fmt, q_key = _detect(row, prompt_key, answer_key)
    else:
        q_key = prompt_key or FIELDS[fmt][0]
    a_key = answer_key or FIELDS[fmt][1]
    question = _text(row, q_key, "question")
    solution = ""
    if fmt == "gsm8k":
        full = _text(row, a_key, "answer")
        if _GSM8K_MARK not in full:
            raise BadRow(f"answer field '{a_key}' has no '#### <answer>' line (GSM8K format)")
        work, _, answer = full.rpartition(_GSM8K_MARK)
        answer = answer.strip().replace(",", "")
        solution = _steps_solution(_CALCULATOR.sub("", work).splitlines(), answer, delimiter)
    elif fmt == "math":
        if a_key in row and row[a_key] is not None:
            answer = _text(row, a_key, "answer")
            answer = extract_boxed(answer) or answer
        else:
            worked = _text(row, "solution", "solution")
            answer = extract_boxed(worked)
            if answer is None:
                raise BadRow(f"no '{a_key}' field and no \\boxed{{}} answer in field 'solution' (MATH format)")
            solution = worked
    else:
        answer = _text(row, a_key, "answer")
        answer = extract_boxed(answer) or answer
    answer = answer.strip()
    if not answer:
        raise BadRow("the answer is empty")
    if len(answer) > MAX_ANSWER_CHARS:
        raise BadRow(f"the answer is longer than {MAX_ANSWER_CHARS} characters")
    return Problem(prompt=question, answer=answer, solution=solution)


def load_problems(path: str, kind: str, fmt: str = "auto", prompt_key: Optional[str] = None,
                  answer_key: Optional[str] = None, on_bad_row: str = "error",
                  delimiter: str = "\n\n") -> tuple[list[Problem], int]:
    """The problems of a jsonl / parquet file and the number of skipped bad rows."""
    if kind not in ("jsonl", "parquet"):
        raise ValueError(f"file kind must be jsonl or parquet, got {kind!r}")
    if fmt not in FORMATS:
        raise DataError(f"data.format = {fmt!r}; expected one of {list(FORMATS)}")
    if on_bad_row not in ("error", "skip"):
        raise DataError(f"data.on_bad_row = {on_bad_row!r}; expected 'error' or 'skip'")
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    problems: list[Problem] = []
    skipped = 0
    for where, row in _records(path, kind):
        try:
            problems.append(parse_row(row, fmt, prompt_key, answer_key, delimiter))
        except BadRow as e:
            if on_bad_row == "skip":
                skipped += 1
                continue
            raise DataError(f"{path} {where}: {e}; fix the row or set data.on_bad_row=skip") from None
    if skipped:
        log.warning("%s: skipped %d bad rows (data.on_bad_row=skip)", path, skipped)
    if not problems:
        raise DataError(f"{path}: no usable rows" + (f" ({skipped} bad rows skipped)" if skipped else ""))
    return problems, skipped


class FileTask(SplitMathTask):
    """Problems from `data.path` (and `data.eval_path`), checked with math-verify."""

    needs_template = True

    def __init__(self, kind: str, path: str, eval_path: Optional[str] = None, fmt: str = "auto",
                 prompt_key: Optional[str] = None, answer_key: Optional[str] = None, on_bad_row: str = "error",
                 eval_size: int = 500, delimiter: str = "\n\n", verify_timeout_s: float = 5.0,
                 answer_extraction: str = "boxed") -> None:
        self.name = kind
        self.verify_timeout_s = verify_timeout_s
        self.answer_extraction = answer_extraction
        kw = dict(kind=kind, fmt=fmt, prompt_key=prompt_key, answer_key=answer_key, on_bad_row=on_bad_row,
                  delimiter=delimiter)
        rows, self.skipped_rows = load_problems(path, **kw)
        if eval_path:
            self.heldout, skipped = load_problems(eval_path, **kw)
            self.skipped_rows += skipped
            self.train = rows
        else:
            if len(rows) <= eval_size:
                raise DataError(f"{path}: {len(rows)} usable rows leave none for training after holding out "
                                f"data.eval_size={eval_size}; lower data.eval_size or set data.eval_path")
            self.train, self.heldout = rows[:-eval_size], rows[-eval_size:]
