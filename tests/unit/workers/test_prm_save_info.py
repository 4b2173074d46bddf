"""A saved PRM says what its values mean: an RL checkpoint's PRM carries its online TD discount."""

from __future__ import annotations

import pytest

from tdrm_rl.config import load_config
from tdrm_rl.models.prm_info import read_prm_info
from tdrm_rl.workers.base import free_port
from tdrm_rl.workers.prm import PRMWorker
from tests.unit.rl.test_stages import SIZES


@pytest.mark.parametrize("td_mode, objective, want_objective, want_discount", [
    ("nstep", None, "td", 0.8),          # an RL checkpoint: the online updates' objective
    ("lambda", None, "td_lambda", 0.8),
    ("nstep", "exact", "exact", 1.0),    # prm-train with a label objective: undiscounted values
])
def test_saved_prm_records_its_objective_and_discount(tiny_path, tmp_path, td_mode, objective, want_objective,
                                                       want_discount):
    cfg = load_config(None, SIZES + [f"trainer.output_dir={tmp_path}", "prm.gamma=0.8", f"prm.td_mode={td_mode}"])
    worker = PRMWorker(cfg, tiny_path, num_threads=1)
    worker.setup_distributed("127.0.0.1", free_port())
    worker.setup()
    path = worker.save(str(tmp_path / "prm"), objective=objective)
    info = read_prm_info(path)
    assert info["objective"] == want_objective
    assert info["discount"] == pytest.approx(want_discount)
    assert info["td_mode"] == td_mode


def test_a_checkpoint_without_the_file_reads_as_empty(tmp_path):
    assert read_prm_info(str(tmp_path)) == {}
