"""Final answers: `\\boxed{}` extraction and math-verify equivalence, bounded in time.

math-verify runs in a checker child process (`tdrm_rl.tasks.bounded`): a check that misses its
deadline scores 0 and never hangs the caller, whatever thread or Ray actor it runs in.
"""

from __future__ import annotations

from typing import Any, Optional

from .bounded import CheckerProcess, shared_checker

_BOXED = "\\boxed{"
# A final answer longer than this is garbage; checking it would only cost time.
MAX_ANSWER_CHARS = 1000


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


def as_text(value: Any) -> Optional[str]:
    """A response or answer as text (bytes decoded); None for anything else."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def math_equal_in_child(gold: str, pred: str, inner_timeout: int) -> bool:
    """math-verify on one pair. Runs in the checker child's main thread, where its signal timeouts work."""
    from math_verify import parse, verify

    gold_parsed = parse(gold, parsing_timeout=inner_timeout)
    if not gold_parsed:  # bare LaTeX ("\\frac{1}{2}") needs math delimiters to be found
        gold_parsed = parse(f"${gold}$", parsing_timeout=inner_timeout)
    pred_parsed = parse(f"{_BOXED}{pred}}}", parsing_timeout=inner_timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=inner_timeout))


def math_checker(timeout_s: float = 5.0) -> CheckerProcess:
    """This process's math-verify child (warmed up: the first parse builds its grammar)."""
    return shared_checker("math-verify", timeout_s, warmup=(math_equal_in_child, ("1", "1", 5)))


def math_equal(gold: str, pred: str, timeout_s: float = 5.0) -> Optional[bool]:
    """Is `pred` (a final answer, without \\boxed) equivalent to `gold`? None when the deadline hit."""
    # math-verify's own timeouts end most slow checks inside the child before the deadline, sparing a restart.
    inner = max(1, int(timeout_s * 0.6))
    result = math_checker(timeout_s).call(math_equal_in_child, gold, pred, inner)
    return None if result is None else bool(result)


def verify_math(response: Any, gold: Any, timeout_s: float = 5.0) -> float:
    """1.0 if the last \\boxed{} of `response` is math-equivalent to `gold`, else 0.0. Never raises."""
    try:
        text, ref = as_text(response), as_text(gold)
        if text is None or ref is None or not ref.strip() or len(ref) > MAX_ANSWER_CHARS:
            return 0.0
        pred = extract_boxed(text)
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

    def sample_train(self, n: int, rng: Any) -> list:
        return [self.train[rng.randrange(len(self.train))] for _ in range(n)]

    def train_set(self, size: int) -> list:
        return self.train[:size] if size else list(self.train)

    def eval_problems(self, n: int) -> list:
        """The first `n` held-out problems (all of them when n is larger)."""
        return self.heldout[:n]

    def verify(self, response: Any, answer: Any) -> float:
        return verify_math(response, answer, self.verify_timeout_s)
