"""The embedded arithmetic task: generation, the train/eval split and the verifier."""

from __future__ import annotations

import random
import re
import time

import pytest

from tdrm_rl.config import DataConfig
from tdrm_rl.tasks import get_task
from tdrm_rl.tasks.arith import ArithTask, canonical_key, extract_boxed, is_eval_key, verify


def _parse(prompt: str) -> tuple[int, list[tuple[str, int]]]:
    m = re.fullmatch(r"Start with (\d+): ((?:[-+*]\d+ ?)+)\n", prompt)
    assert m, prompt
    ops = [(t[0], int(t[1:])) for t in m.group(2).split()]
    return int(m.group(1)), ops


def test_solution_is_correct_step_by_step() -> None:
    task = ArithTask(num_ops=4, operand_max=20, seed=3)
    for p in task.sample_train(300, random.Random(1)):
        start, ops = _parse(p.prompt)
        steps = p.solution.split("\n\n")
        assert len(steps) == len(ops) + 1  # one step per operation plus the answer step
        value = start
        for step, (op, x) in zip(steps, ops):
            new = {"+": value + x, "-": value - x, "*": value * x}[op]
            assert step == f"{value}{op}{x}={new}"
            assert 0 <= new <= task.value_max and 1 <= x <= task.operand_max
            value = new
        assert steps[-1] == f"\\boxed{{{value}}}" and p.answer == str(value)
        assert task.verify(p.solution, p.answer) == 1.0


def test_operators_respected_and_all_used() -> None:
    task = ArithTask(num_ops=3, operand_max=9, operators="+*", seed=0)
    seen = {op for p in task.sample_train(200, random.Random(0)) for op, _ in _parse(p.prompt)[1]}
    assert seen == {"+", "*"}
    seen = {op for p in ArithTask(3, 9, "+-*").sample_train(300, random.Random(0)) for op, _ in _parse(p.prompt)[1]}
    assert seen == {"+", "-", "*"}


def test_eval_is_deterministic_distinct_and_prefix_stable() -> None:
    a = ArithTask(3, 20, seed=5).eval_problems(200)
    b = ArithTask(3, 20, seed=5).eval_problems(200)
    assert [p.prompt for p in a] == [p.prompt for p in b]
    assert len({p.prompt for p in a}) == 200
    assert [p.prompt for p in ArithTask(3, 20, seed=5).eval_problems(50)] == [p.prompt for p in a[:50]]
    other = ArithTask(3, 20, seed=6).eval_problems(200)
    assert [p.prompt for p in other] != [p.prompt for p in a]


def test_train_and_eval_never_overlap() -> None:
    # A small space (start 1..4, 2 ops with operands 1..4) so that the splits would collide often
    # if sampling ignored the buckets.
    task = ArithTask(num_ops=2, operand_max=4, operators="+-*", seed=0)
    eval_prompts = {p.prompt for p in task.eval_problems(300)}
    train_prompts = {p.prompt for p in task.sample_train(3000, random.Random(0))}
    assert eval_prompts and train_prompts
    assert not eval_prompts & train_prompts
    # The split is a pure function of the problem text, independent of seeds and task instances.
    for p in task.eval_problems(20):
        assert is_eval_key(canonical_key(*_parse(p.prompt)))
    assert is_eval_key("12+5*3-7") == is_eval_key("12+5*3-7")
    # Roughly 10% of problems are held out.
    frac = sum(is_eval_key(f"{i}+{j}") for i in range(100) for j in range(100)) / 10_000
    assert 0.07 < frac < 0.13
    # When the space is smaller than asked for, problems repeat rather than leaking across.
    assert len(eval_prompts) < 300 and len(task.eval_problems(300)) == 300


def test_sample_train_uses_the_given_rng() -> None:
    task = ArithTask(3, 20)
    a = task.sample_train(10, random.Random(7))
    b = task.sample_train(10, random.Random(7))
    c = task.sample_train(10, random.Random(8))
    assert [p.prompt for p in a] == [p.prompt for p in b] != [p.prompt for p in c]


@pytest.mark.parametrize("response,answer,expected", [
    ("1+2=3\n\n\\boxed{3}", "3", 1.0),
    ("\\boxed{3}", 3, 1.0),
    ("\\boxed{ 003 }", "3", 1.0),
    ("\\boxed{+3}", "3", 1.0),
    ("\\boxed{-0}", "0", 1.0),
    ("\\boxed{{3}}", "3", 1.0),
    ("\\boxed{4} then \\boxed{3}", "3", 1.0),  # the last box counts
    ("\\boxed{3} then \\boxed{4}", "3", 0.0),
    ("\\boxed{3", "3", 0.0),  # unbalanced
    ("\\boxed{3}}}}", "3", 1.0),
    ("\\boxed{1+2}", "3", 0.0),  # never evaluated
    ("\\boxed{__import__('os')}", "3", 0.0),
    ("\\boxed{3.0}", "3", 0.0),
    ("\\boxed{-3}", "3", 0.0),
    ("the answer is 3", "3", 0.0),
    ("\\boxed{}", "3", 0.0),
    ("\\boxed{3}", "", 0.0),
    ("\\boxed{3}", None, 0.0),
    (None, "3", 0.0),
    (b"\\boxed{3}", "3", 1.0),
    (12345, "3", 0.0),
    ("\\boxed{\\boxed{3}}", "3", 1.0),
    ("\\boxed{3\u0663}", "33", 0.0),  # non-ASCII digits are not digits here
])
def test_verify_cases(response: object, answer: object, expected: float) -> None:
    assert verify(response, answer) == expected


def test_verify_huge_inputs_are_fast_and_safe() -> None:
    big_digits = "9" * 1_000_000
    cases = [
        ("x" * 1_000_000 + "\\boxed{7}", "7", 1.0),
        ("\\boxed{" * 200_000, "7", 0.0),
        ("{" * 500_000 + "\\boxed{7}" + "}" * 500_000, "7", 1.0),
        ("\\boxed{" + "{" * 500_000 + "7" + "}" * 500_000 + "}", "7", 0.0),  # too long to be an answer
        ("\\boxed{" + big_digits + "}", big_digits, 0.0),
        ("\\boxed{" + "9" * 999 + "}", "9" * 999, 1.0),  # big but plausible: compared as text
        ("\\boxed{" + "9" * 999 + "}", "9" * 998 + "8", 0.0),
    ]
    t0 = time.perf_counter()
    for response, answer, expected in cases:
        assert verify(response, answer) == expected
    assert time.perf_counter() - t0 < 2.0


def test_extract_boxed() -> None:
    assert extract_boxed("a \\boxed{1{2}3} b") == "1{2}3"
    assert extract_boxed("no box") is None
    assert extract_boxed("\\boxed{1") is None


def test_get_task_and_errors() -> None:
    task = get_task(DataConfig(num_ops=2, operand_max=7, operators="+", seed=4, value_max=50))
    assert isinstance(task, ArithTask)
    assert (task.num_ops, task.operand_max, task.operators, task.seed, task.value_max) == (2, 7, "+", 4, 50)
    with pytest.raises(ValueError, match="data.task"):
        get_task(DataConfig(task="gsm8k"))
    with pytest.raises(ValueError, match="data.operators"):
        ArithTask(3, 20, operators="+/")
    with pytest.raises(ValueError, match="data.num_ops"):
        ArithTask(0, 20)
    with pytest.raises(ValueError, match="data.value_max"):
        ArithTask(50, 12, operators="+").eval_problems(1)  # 50 additions cannot stay below 99
    # "-" alone is fine as long as the chain fits: every problem still has num_ops steps.
    assert all(p.solution.count("\n\n") == 3 for p in ArithTask(3, 9, operators="-").eval_problems(20))
