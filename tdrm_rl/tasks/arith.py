"""Embedded multi-step arithmetic task: a start value and a chain of operations.

A problem reads "Start with 12: +5 *3 -7\\n" (the prompt); the worked solution does one
operation per step, steps separated by "\\n\\n", and its last step holds the answer:
"12+5=17\\n\\n17*3=51\\n\\n51-7=44\\n\\n\\boxed{44}". Operations apply left to right.

Train and held-out eval problems never overlap: a stable hash of the canonical problem puts
each problem in exactly one bucket, and each split only ever yields problems of its bucket.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any, Optional

from .answers import extract_answer, extract_boxed
from .base import Problem

DELIMITER = "\n\n"
OPERATORS = "+-*"
# One problem in EVAL_BUCKETS / NUM_BUCKETS goes to the held-out split.
NUM_BUCKETS = 1000
EVAL_BUCKETS = 100
_BOXED = "\\boxed{"
# A verifiable answer longer than this is garbage; checking it would only cost time.
_MAX_ANSWER_CHARS = 1000


def canonical_key(start: int, ops: list[tuple[str, int]]) -> str:
    """Canonical text of a problem, the input to the split hash ("12+5*3-7")."""
    return str(start) + "".join(f"{op}{x}" for op, x in ops)


def is_eval_key(key: str) -> bool:
    """Stable split: hashlib (not Python's salted hash()) decides the bucket of a problem."""
    digest = hashlib.sha256(key.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % NUM_BUCKETS < EVAL_BUCKETS


def _apply(value: int, op: str, x: int) -> int:
    if op == "+":
        return value + x
    if op == "-":
        return value - x
    return value * x


class ArithTask:
    """Seeded generator and verifier of chained integer arithmetic problems.

    Intermediate values stay in [0, value_max]: an operation is only drawn when some operand
    in [1, operand_max] keeps the running value in range, so no step needs negative numbers
    and every step is arithmetic a tiny model can learn.
    """

    name = "arith"
    needs_template = False  # its compact prompt is the model input (char-level tiny model)

    def __init__(self, num_ops: int, operand_max: int, operators: str = OPERATORS, seed: int = 0,
                 value_max: int = 99, answer_extraction: str = "boxed") -> None:
        if num_ops < 1:
            raise ValueError(f"data.num_ops must be >= 1, got {num_ops}")
        if operand_max < 1:
            raise ValueError(f"data.operand_max must be >= 1, got {operand_max}")
        if not operators or set(operators) - set(OPERATORS):
            raise ValueError(f"data.operators must be a non-empty subset of {OPERATORS!r}, got {operators!r}")
        if value_max < 2:
            raise ValueError(f"data.value_max must be >= 2, got {value_max}")
        self.num_ops = num_ops
        self.operand_max = operand_max
        self.operators = "".join(sorted(set(operators), key=OPERATORS.index))
        self.seed = seed
        self.value_max = value_max
        self.answer_extraction = answer_extraction
        self.delimiter = DELIMITER

    # ----- generation -------------------------------------------------------------------

    def _operand_range(self, value: int, op: str) -> tuple[int, int]:
        """Inclusive operand range that keeps op(value, x) within [0, value_max]."""
        if op == "+":
            return 1, min(self.operand_max, self.value_max - value)
        if op == "-":
            return 1, min(self.operand_max, value)
        if value == 0:
            return 1, self.operand_max
        return 1, min(self.operand_max, self.value_max // value)

    def _draw(self, rng: random.Random) -> tuple[int, list[tuple[str, int]]]:
        # Dead ends (no operator fits) only happen with "+"-only or "-"-only sets; redraw then,
        # so every problem has exactly num_ops steps, but give up if it keeps happening.
        for _ in range(1000):
            start = rng.randint(1, min(self.operand_max, self.value_max))
            value, ops = start, []
            for _ in range(self.num_ops):
                ranges = {op: self._operand_range(value, op) for op in self.operators}
                choices = [op for op, (lo, hi) in ranges.items() if lo <= hi]
                if not choices:
                    break
                op = rng.choice(choices)
                x = rng.randint(*ranges[op])
                ops.append((op, x))
                value = _apply(value, op, x)
            else:
                return start, ops
        raise ValueError(f"arith task: cannot chain data.num_ops={self.num_ops} operations {self.operators!r} "
                         f"within data.value_max={self.value_max}")

    def make_problem(self, start: int, ops: list[tuple[str, int]]) -> Problem:
        """Render the prompt and the worked solution of a problem."""
        # Compact on purpose: the tokenizer is char-level, so every character costs a forward
        # position in SFT, in every RL rollout and in every PRM pass.
        prompt = f"Start with {start}: " + " ".join(f"{op}{x}" for op, x in ops) + "\n"
        steps, value = [], start
        for op, x in ops:
            new = _apply(value, op, x)
            steps.append(f"{value}{op}{x}={new}")
            value = new
        steps.append(f"{_BOXED}{value}}}")
        return Problem(prompt=prompt, answer=str(value), solution=DELIMITER.join(steps))

    def _sample_bucket(self, n: int, rng: random.Random, want_eval: bool, unique: bool) -> list[Problem]:
        out: list[Problem] = []
        seen: set[str] = set()
        # Bounded rejection sampling: a tiny problem space may hold few (or no) problems of a bucket.
        budget = 50 * n + 5_000
        while len(out) < n and budget > 0:
            budget -= 1
            start, ops = self._draw(rng)
            key = canonical_key(start, ops)
            if is_eval_key(key) != want_eval or (unique and key in seen):
                continue
            seen.add(key)
            out.append(self.make_problem(start, ops))
        if n > 0 and not out:
            split = "eval" if want_eval else "train"
            raise ValueError(f"arith task: no {split} problems found; enlarge data.num_ops / data.operand_max")
        if len(out) < n:
            # Problem space smaller than requested: repeat what exists, deterministically.
            out = [out[i % len(out)] for i in range(n)]
        return out

    def sample_train(self, n: int, rng: random.Random) -> list[Problem]:
        """`n` fresh training problems drawn with `rng` (never a held-out problem)."""
        return self._sample_bucket(n, rng, want_eval=False, unique=False)

    def train_set(self, size: int) -> Optional[list[Problem]]:
        """A fixed pool of `size` distinct training problems (for epochs), or None (size 0) for the endless stream."""
        if size == 0:
            return None
        return self._sample_bucket(size, random.Random(f"arith-train-{self.seed}"), want_eval=False, unique=True)

    def eval_problems(self, n: int) -> list[Problem]:
        """The first `n` held-out problems for this seed: distinct where the space allows."""
        rng = random.Random(f"arith-eval-{self.seed}")
        return self._sample_bucket(n, rng, want_eval=True, unique=True)

    # ----- verification -----------------------------------------------------------------

    def verify(self, response: Any, answer: Any) -> float:
        """1.0 if the final answer of `response` (the last \\boxed{...} by default) equals the integer `answer`."""
        return verify(response, answer, self.answer_extraction)

    def extract_answer(self, response: str) -> Optional[str]:
        """The final answer `verify` reads (majority vote groups on it)."""
        return extract_answer(response, self.answer_extraction)

    def step_labels(self, prompt: str, steps: list[str], answer: Any) -> Optional[list[int]]:
        """Exact step labels (measurement only, never a training signal of a compared method)."""
        return step_labels(prompt, steps, answer)


def _canonical_int(text: str) -> Optional[str]:
    """Canonical form of an integer literal ("+007" -> "7", "-0" -> "0"), else None.

    Works on the digits as text: int() on a huge literal is quadratic and may raise.
    """
    if len(text) > _MAX_ANSWER_CHARS:  # first, so the work below is bounded
        return None
    text = text.strip().replace(",", "")
    while len(text) >= 2 and text[0] == "{" and text[-1] == "}":
        text = text[1:-1].strip()
    if text.startswith("$") and text.endswith("$") and len(text) >= 2:
        text = text[1:-1].strip()
    if not text:
        return None
    sign = ""
    if text[0] in "+-":
        sign, text = ("-" if text[0] == "-" else ""), text[1:]
    if not text or not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    return ("" if digits == "0" else sign) + digits


def verify(response: Any, answer: Any, extraction: str = "boxed") -> float:
    """Module-level verifier: the final answer (`extract_answer` under `extraction`) as an integer against
    `answer`. Never raises, never evaluates text."""
    try:
        if isinstance(response, (bytes, bytearray)):
            response = bytes(response).decode("utf-8", errors="replace")
        if isinstance(answer, (bytes, bytearray)):
            answer = bytes(answer).decode("utf-8", errors="replace")
        if not isinstance(response, str) or answer is None or isinstance(answer, bool):
            return 0.0
        ref = _canonical_int(str(answer))
        if ref is None:
            return 0.0
        pred = extract_answer(response, extraction)
        if pred is None:
            return 0.0
        return 1.0 if _canonical_int(pred) == ref else 0.0
    except Exception:  # a verifier must score garbage as wrong, never crash a rollout
        return 0.0


_PROMPT_RE = re.compile(r"Start with (\d+): ((?:[-+*]\d+ ?)+)\n?")
_STEP_RE = re.compile(r"(\d+)\s*([-+*])\s*(\d+)\s*=\s*(-?\d+)")


def parse_prompt(prompt: str) -> Optional[tuple[int, list[tuple[str, int]]]]:
    """(start, [(op, operand), ...]) of an arith prompt, or None if `prompt` is not one."""
    m = _PROMPT_RE.search(prompt)
    if m is None:
        return None
    return int(m.group(1)), [(t[0], int(t[1:])) for t in m.group(2).split()]


def step_labels(prompt: str, steps: list[str], answer: Any) -> Optional[list[int]]:
    """Exact soundness of every step prefix of a solution: label_t = 1 iff steps 0..t are all right.

    Step i < num_ops is right iff it reads "a<op>x=b" with a the true value before operation i, <op>x
    operation i of the prompt and b = a <op> x (spaces allowed). Step num_ops is right iff it is the
    boxed final answer (`verify` against `answer`). Any further step is wrong, and so is an early
    answer. Once a step is wrong every later prefix is unsound. None when `prompt` is not an arith prompt.
    """
    parsed = parse_prompt(prompt)
    if parsed is None:
        return None
    value, ops = parsed
    labels, sound = [], True
    for i, step in enumerate(steps):
        if sound:
            if i < len(ops):
                op, x = ops[i]
                m = _STEP_RE.fullmatch(step.strip())
                new = _apply(value, op, x)
                sound = (m is not None and int(m.group(1)) == value and m.group(2) == op
                         and int(m.group(3)) == x and int(m.group(4)) == new)
                value = new
            else:
                sound = i == len(ops) and verify(step, answer) == 1.0
        labels.append(int(sound))
    return labels
