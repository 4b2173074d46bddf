"""Final answers: extraction (`data.answer_extraction`), the format reward's check, and math-verify equivalence,
bounded in time.

Extraction modes (ANSWER_EXTRACTIONS), the same for every task:

    boxed                 the content of the last \\boxed{...} (the default; what the system prompt asks for)
    last_number           the last number in the response ("... so 8 - 2 = 6" -> "6"; commas dropped)
    boxed_or_last_number  the \\boxed{} answer if there is one, else the last number: small models often answer
                          right without the box
    gsm8k                 the text after the last "####" (GSM8K's answer line "#### 72")

math-verify runs in a checker child process (`tdrm_rl.tasks.bounded`): a check that misses its
deadline scores 0 and never hangs the caller, whatever thread or Ray actor it runs in.
"""

from __future__ import annotations

import re
import time
from typing import Any, Optional

from .bounded import TIMED_OUT, CheckerProcess, shared_checker

_BOXED = "\\boxed{"
_GSM8K_MARK = "####"
# A final answer longer than this is garbage; checking it would only cost time.
MAX_ANSWER_CHARS = 1000
ANSWER_EXTRACTIONS = ("boxed", "last_number", "boxed_or_last_number", "gsm8k")
# An optional sign, digits with optional thousands commas, an optional decimal part or a /denominator.
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def extract_boxed(response: str) -> Optional[str]:
    """Content of the last \\boxed{...} (braces balanced), or None. Linear time."""
    start = response.rfind(_BOXED)
    if start < 0:
        return None
    i = start + len(_BOXED)
    depth = 1
    for j in range(i, len(response)):
        c = response[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return response[i:j]
    return None


def extract_last_number(response: str) -> Optional[str]:
    """The last number in `response` ("1,000" -> "1000", "-3.5", "3/4"), or None. Linear time."""
    last = None
    for last in _NUMBER.finditer(response):
        pass
    if last is None:
        return None
    return last.group(0).replace(",", "").lstrip("+")


def extract_gsm8k(response: str) -> Optional[str]:
    """The rest of the line after the last "####" (commas and a trailing period dropped), or None."""
    start = response.rfind(_GSM8K_MARK)
    if start < 0:
        return None
    line = response[start + len(_GSM8K_MARK):].split("\n", 1)[0].strip().rstrip(".").replace(",", "")
    return line or None


def extract_answer(response: str, mode: str = "boxed") -> Optional[str]:
    """The final answer of `response` under extraction `mode` (ANSWER_EXTRACTIONS), or None when it gives none."""
    if mode == "boxed":
        return extract_boxed(response)
    if mode == "last_number":
        return extract_last_number(response)
    if mode == "boxed_or_last_number":
        boxed = extract_boxed(response)
        return boxed if boxed is not None and boxed.strip() else extract_last_number(response)
    if mode == "gsm8k":
        return extract_gsm8k(response)
    raise ValueError(f"unknown answer extraction {mode!r}; known: {', '.join(ANSWER_EXTRACTIONS)}")


def final_answer(task: Any, response: str) -> Optional[str]:
    """The final answer `task.verify` reads in `response` (its `extract_answer`; \\boxed{} for a task without
    one), stripped: majority vote groups on it."""
    extract = getattr(task, "extract_answer", None)
    pred = extract(response) if extract is not None else extract_boxed(response)
    return None if pred is None else pred.strip()


def follows_format(response: str, mode: str = "boxed") -> bool:
    """Does `response` give its final answer in the format the prompt asks for (the format reward's check)?

    gsm8k asks for a "#### answer" line; every other mode asks for \\boxed{answer} (the system prompt's
    request), so a bare last number earns the answer's reward but not the format's.
    """
    text = as_text(response)
    if text is None:
        return False
    pred = extract_gsm8k(text) if mode == "gsm8k" else extract_boxed(text)
    return pred is not None and bool(pred.strip()) and len(pred) <= MAX_ANSWER_CHARS


def as_text(value: Any) -> Optional[str]:
    """A response or answer as text (bytes decoded); None for anything else."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def math_equal_in_child(gold: str, pred: str, inner_timeout: int) -> bool | str:
    """math-verify on one pair. Runs in the checker child's main thread, where its signal timeouts work; a
    comparison that ran into their limit reports TIMED_OUT, counted like the child's deadline."""
    from math_verify import parse, verify

    gold_parsed = parse(gold, parsing_timeout=inner_timeout)
    if not gold_parsed:  # bare LaTeX ("\\frac{1}{2}") needs math delimiters to be found
        gold_parsed = parse(f"${gold}$", parsing_timeout=inner_timeout)
    pred_parsed = parse(f"{_BOXED}{pred}}}", parsing_timeout=inner_timeout)
    if not gold_parsed or not pred_parsed:
        return False
    start = time.monotonic()
    same = bool(verify(gold_parsed, pred_parsed, timeout_seconds=inner_timeout))
    # math-verify's alarm ends a comparison at inner_timeout and answers False (it only logs the timeout)
    return TIMED_OUT if not same and time.monotonic() - start >= inner_timeout else same


def math_checker(timeout_s: float = 5.0) -> CheckerProcess:
    """This process's math-verify child (warmed up: the first parse builds its grammar)."""
    return shared_checker("math-verify", timeout_s, warmup=(math_equal_in_child, ("1", "1", 5)))


def math_equal(gold: str, pred: str, timeout_s: float = 5.0) -> Optional[bool]:
    """Is `pred` (a final answer, without \\boxed) equivalent to `gold`? None when the deadline hit."""
    # math-verify's own timeouts end most slow checks inside the child before the deadline, sparing a restart.
    inner = max(1, int(timeout_s * 0.6))
    result = math_checker(timeout_s).call(math_equal_in_child, gold, pred, inner)
    return None if result is None else bool(result)


def verify_math(response: Any, gold: Any, timeout_s: float = 5.0, extraction: str = "boxed") -> float:
    """1.0 if the final answer of `response` (`extract_answer` under `extraction`) is math-equivalent to `gold`,
    else 0.0. Never raises."""
    try:
        text, ref = as_text(response), as_text(gold)
        if text is None or ref is None or not ref.strip() or len(ref) > MAX_ANSWER_CHARS:
            return 0.0
        pred = extract_answer(text, extraction)
        if pred is None or not pred.strip() or len(pred) > MAX_ANSWER_CHARS:
            return 0.0
        if pred.strip() == ref.strip():  # the common case needs no child process
            return 1.0
        return 1.0 if math_equal(ref, pred, timeout_s) else 0.0
    except Exception:  # a verifier scores garbage as wrong, it never crashes a rollout
        return 0.0


class SplitMathTask:
    """A task with fixed `train` / `heldout` problem lists, checked with `verify_math` (CHAMP, jsonl, parquet)."""

    train: list
    heldout: list
    verify_timeout_s: float = 5.0
    answer_extraction: str = "boxed"

    def sample_train(self, n: int, rng: Any) -> list:
        return [self.train[rng.randrange(len(self.train))] for _ in range(n)]

    def train_set(self, size: int) -> list:
        return self.train[:size] if size else list(self.train)

    def eval_problems(self, n: int) -> list:
        """The first `n` held-out problems (all of them when n is larger)."""
        return self.heldout[:n]

    def verify(self, response: Any, answer: Any) -> float:
        return verify_math(response, answer, self.verify_timeout_s, self.answer_extraction)

    def extract_answer(self, response: str) -> Optional[str]:
        """The final answer `verify` reads (majority vote groups on it)."""
        return extract_answer(response, self.answer_extraction)
