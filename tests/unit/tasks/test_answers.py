"""Final answers: \\boxed{} extraction, math-verify equivalence, and the time bound on a check."""

from __future__ import annotations

import threading
import time

import pytest

from tdrm_rl.tasks.answers import extract_boxed, math_equal, math_equal_in_child, verify_math
from tdrm_rl.tasks.bounded import CheckerProcess

# 100 kB of nested fractions: \frac{1}{\frac{1}{...{2}...}}
NESTED = "\\frac{1}{" * 10_000 + "2" + "}" * 10_000


def test_nested_fraction_is_100kb():
    assert len(NESTED) >= 100_000


def test_extract_boxed_takes_the_last_balanced_box():
    assert extract_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert extract_boxed("no box") is None
    assert extract_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize("response, gold, expected", [
    ("so \\boxed{72}", "72", 1.0),
    ("so \\boxed{72.0}", "72", 1.0),
    ("so \\boxed{\\frac{2}{4}}", "0.5", 1.0),
    ("so \\boxed{\\frac12}", "\\frac{1}{2}", 1.0),
    ("so \\boxed{1,000}", "1000", 1.0),
    ("so \\boxed{71}", "72", 0.0),
    ("72", "72", 0.0),  # no \boxed{}: no final answer
    (None, "72", 0.0),
    ("\\boxed{72}", None, 0.0),
])
def test_verify_math_right_and_wrong(response, gold, expected):
    assert verify_math(response, gold) == expected


def test_verify_math_works_off_the_main_thread():
    # math-verify's own timeout uses signal.alarm, which raises in a non-main thread; the checker child avoids it.
    out = []
    worker = threading.Thread(target=lambda: out.append((verify_math("\\boxed{0.25}", "\\frac{1}{4}"),
                                                         verify_math("\\boxed{0.3}", "\\frac{1}{4}"))))
    worker.start()
    worker.join(120)
    assert out == [(1.0, 0.0)]


def test_100kb_nested_fraction_returns_within_5s():
    verify_math("warm \\boxed{1}", "2")  # start the checker child outside the timed part
    start = time.perf_counter()
    assert verify_math(f"so \\boxed{{{NESTED}}}", "1") == 0.0
    assert time.perf_counter() - start < 5.0


def test_100kb_nested_fraction_through_math_verify_itself_is_cut_at_the_deadline():
    # Past the length guard: the pair goes to math-verify in the child, and the deadline still holds.
    math_equal("1", "1")
    start = time.perf_counter()
    assert not math_equal("1", NESTED, timeout_s=5.0)
    assert time.perf_counter() - start < 5.0 + 0.5  # the deadline plus killing the child
    assert math_equal("3", "3.0") is True  # a fresh child answers the next check


def test_a_check_past_its_deadline_is_killed_and_the_next_one_works():
    checker = CheckerProcess(timeout_s=0.5, warmup=(math_equal_in_child, ("1", "1", 5)))
    try:
        assert checker.call(math_equal_in_child, "1", "1", 5) is True
        start = time.perf_counter()
        # inner math-verify timeout 5 s > the 0.5 s deadline: only the kill can end this call in time
        assert checker.call(math_equal_in_child, "1", NESTED, 5) is None
        assert time.perf_counter() - start < 3.0
        assert checker.timeouts == 1
        assert checker.call(math_equal_in_child, "\\frac{1}{2}", "0.5", 5) is True
        assert checker.starts == 2
    finally:
        checker.close()
