"""Counts of degenerate responses. They are scored (verifier 0, no PRM steps), never dropped silently."""

from __future__ import annotations

from tdrm_rl.tasks.arith import extract_boxed


def response_counts(texts: list[str], delimiter: str) -> dict[str, float]:
    """Fractions of responses that are empty, have no step delimiter, or have no \\boxed{} answer."""
    n = max(len(texts), 1)
    return {
        "response/empty_frac": sum(not t.strip() for t in texts) / n,
        "response/no_delimiter_frac": sum(delimiter not in t for t in texts) / n,
        "response/no_answer_frac": sum(extract_boxed(t) is None for t in texts) / n,
    }
