"""reasoning_gym:<name> tasks: real generators, a disjoint held-out split, the dataset's own scorer."""

from __future__ import annotations

import pickle
import random

import pytest

from tdrm_rl.config import DataConfig
from tdrm_rl.tasks import get_task
from tdrm_rl.tasks.base import DataError
from tdrm_rl.tasks.rgym import GymAnswer, ReasoningGymTask


@pytest.mark.parametrize("name", ["gsm_symbolic", "basic_arithmetic", "chain_sum"])
def test_dataset_loads_splits_and_verifies_right_and_wrong(name):
    task = get_task(DataConfig(task=f"reasoning_gym:{name}", eval_size=20))
    assert task.name == f"reasoning_gym:{name}" and task.needs_template
    heldout = task.eval_problems(20)
    train = task.sample_train(50, random.Random(0))
    assert len(heldout) == 20 and len(train) == 50
    assert not {p.prompt for p in heldout} & {p.prompt for p in train}
    assert task.eval_problems(20) == heldout  # a fixed held-out set
    for problem in heldout[:3] + train[:3]:
        answer = problem.answer
        assert isinstance(answer, GymAnswer) and answer.entry["question"] == problem.prompt
        right = f"Step one.\n\nSo the result is \\boxed{{{answer}}}"
        assert task.verify(right, answer) == 1.0, (problem.prompt, answer)
        wrong = f"So the result is \\boxed{{{answer}1}}"
        assert task.verify(wrong, answer) == 0.0
        assert task.verify(str(answer), answer) == 0.0  # no \boxed{}: no final answer


def test_partial_credit_is_not_right():
    # gsm_symbolic's scorer gives 0.01 to a well-formed wrong number; a 0/1 verifier calls it wrong.
    task = ReasoningGymTask("gsm_symbolic", eval_size=1)
    answer = task.eval_problems(1)[0].answer
    assert task.verify(f"\\boxed{{{int(float(answer)) + 1}}}", answer) == 0.0


def test_answer_pickles_with_its_entry():
    task = ReasoningGymTask("chain_sum", eval_size=1)
    answer = task.eval_problems(1)[0].answer
    again = pickle.loads(pickle.dumps(answer))
    assert again == answer and again.entry == answer.entry and isinstance(again, GymAnswer)


def test_seed_changes_the_problems_and_options_reach_the_dataset():
    a = ReasoningGymTask("chain_sum", seed=0, eval_size=5).eval_problems(5)
    b = ReasoningGymTask("chain_sum", seed=1, eval_size=5).eval_problems(5)
    assert [p.prompt for p in a] != [p.prompt for p in b]
    short = ReasoningGymTask("chain_sum", eval_size=5, options={"min_terms": 2, "max_terms": 2}).eval_problems(5)
    assert all(p.answer.entry["metadata"]["num_terms"] == 2 for p in short)


def test_unknown_dataset_and_bad_options_are_clear_errors():
    with pytest.raises(DataError, match="unknown reasoning-gym dataset 'gsm_symbolik'"):
        ReasoningGymTask("gsm_symbolik")
    with pytest.raises(DataError, match="data.task_options .* rejected"):
        ReasoningGymTask("chain_sum", options={"no_such_option": 1})
