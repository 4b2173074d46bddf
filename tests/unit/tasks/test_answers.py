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


# ----- answer extraction (data.answer_extraction) and the format check ---------------------------------------

from tdrm_rl.tasks.answers import (ANSWER_EXTRACTIONS, extract_answer, extract_gsm8k, extract_last_number,  # noqa: E402
                                   follows_format)


@pytest.mark.parametrize("text, expected", [
    ("8 - 2 = 6", "6"),  # SmolLM2's way of answering: right, but no box
    ("the total is 1,234 apples.", "1234"),
    ("it drops to -3.5 degrees", "-3.5"),
    ("half is 3/4 of 1.5", "1.5"),
    ("a fraction: 3/4", "3/4"),
    ("12-5=7", "7"),
    ("no digits here", None),
    ("", None),
])
def test_last_number(text, expected):
    assert extract_last_number(text) == expected


def test_gsm8k_answer_line():
    assert extract_gsm8k("48/2 = 24\n#### 1,072.\n") == "1072"
    assert extract_gsm8k("#### 3\nthen #### 5") == "5"
    assert extract_gsm8k("no mark 7") is None and extract_gsm8k("#### \n") is None


def test_each_mode_reads_its_own_answer():
    boxed_and_more = "2+5=7\n\n\\boxed{7} and 9 later"
    assert [extract_answer(boxed_and_more, m) for m in ANSWER_EXTRACTIONS] == ["7", "9", "7", None]
    bare = "2 + 5 = 7"
    assert [extract_answer(bare, m) for m in ANSWER_EXTRACTIONS] == [None, "7", "7", None]
    assert extract_answer("\\boxed{} so 4", "boxed_or_last_number") == "4"  # an empty box is no answer
    with pytest.raises(ValueError, match="unknown answer extraction 'first'"):
        extract_answer("1", "first")


def test_format_check_asks_for_what_the_prompt_requests():
    assert follows_format("so \\boxed{7}") and not follows_format("so 7") and not follows_format("\\boxed{ }")
    assert follows_format("so 7", "last_number") is False  # the prompt still asks for the box
    assert follows_format("#### 7", "gsm8k") and not follows_format("\\boxed{7}", "gsm8k")
    assert follows_format(None) is False


@pytest.mark.parametrize("mode, right", [("boxed", [1, 0, 0, 0]), ("last_number", [1, 1, 1, 0]),
                                         ("boxed_or_last_number", [1, 1, 1, 0]), ("gsm8k", [0, 0, 1, 0])])
def test_every_task_verifies_with_the_configured_extraction(mode, right, tmp_path):
    from tdrm_rl.config import DataConfig
    from tdrm_rl.tasks import get_task

    responses = ["3+4=7\n\n\\boxed{7}", "3 + 4 = 7", "3+4=7\n#### 7", "3 + 4 = 8"]
    arith = get_task(DataConfig(answer_extraction=mode))
    assert [arith.verify(r, "7") for r in responses] == right
    path = tmp_path / "p.jsonl"
    path.write_text("".join(f'{{"question": "q{i}", "answer": "7"}}\n' for i in range(4)))
    files = get_task(DataConfig(task="jsonl", path=str(path), eval_size=1, answer_extraction=mode))
    assert [files.verify(r, "7") for r in responses] == right  # math-verify on the extracted answer
    assert files.extract_answer(responses[1]) == extract_answer(responses[1], mode)


def test_reasoning_gym_scores_the_configured_extraction():
    pytest.importorskip("reasoning_gym")
    from tdrm_rl.config import DataConfig
    from tdrm_rl.tasks import get_task

    for mode, expected in (("boxed", 0.0), ("last_number", 1.0)):
        task = get_task(DataConfig(task="reasoning_gym:chain_sum", eval_size=2, answer_extraction=mode))
        problem = task.eval_problems(1)[0]
        assert task.verify(f"the sum is {problem.answer}", problem.answer) == expected


def test_answer_extraction_is_a_checked_recipe_key():
    from tdrm_rl.config import ConfigError, load_config

    assert load_config(None, ["data.answer_extraction=boxed_or_last_number"]).data.answer_extraction == \
        "boxed_or_last_number"
    with pytest.raises(ConfigError, match="data.answer_extraction"):
        load_config(None, ["data.answer_extraction=first_number"])
