"""The CHAMP task: the packaged problems, a fixed held-out split, math-verify answers."""

from __future__ import annotations

import random

from tdrm_rl.config import DataConfig
from tdrm_rl.tasks import get_task
from tdrm_rl.tasks.champ import ChampTask, is_heldout


def test_champ_loads_with_a_fixed_split_and_verifies():
    task = get_task(DataConfig(task="champ"))
    assert isinstance(task, ChampTask) and task.needs_template
    assert len(task.train) + len(task.heldout) == 270
    assert 35 <= len(task.heldout) <= 75  # about one in five
    assert not {p.prompt for p in task.train} & {p.prompt for p in task.heldout}
    assert [p.prompt for p in ChampTask().eval_problems(500)] == [p.prompt for p in task.heldout]  # fixed
    assert is_heldout("P_Combinatorics_1") == is_heldout("P_Combinatorics_1")
    assert len(task.sample_train(8, random.Random(0))) == 8
    numeric = [p for p in task.heldout if p.answer.strip().lstrip("-").isdigit()]
    assert numeric, "CHAMP has integer answers"
    p = numeric[0]
    assert p.solution.endswith(f"\\boxed{{{p.answer}}}")
    assert task.verify(f"Work.\n\nSo \\boxed{{{p.answer}}}", p.answer) == 1.0
    assert task.verify(f"So \\boxed{{{int(p.answer) + 1}}}", p.answer) == 0.0


def test_champ_free_form_answer_verifies_its_number():
    task = ChampTask()
    everything = task.train + task.heldout
    p = next(x for x in everything if x.answer == "C(10, 5), or equivalently 252")
    assert task.verify("\\boxed{252}", p.answer) == 1.0
    assert task.verify("\\boxed{251}", p.answer) == 0.0
