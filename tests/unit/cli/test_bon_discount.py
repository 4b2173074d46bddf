"""`tdrm-rl bon` reads a PRM's discount from its checkpoint (tdrm_prm.json): an RL checkpoint's TD-PRM gets its
gamma in the first-error rule; a checkpoint without the file is read as undiscounted, and the command says so."""

from __future__ import annotations

import json
import os
import shutil

from tdrm_rl.cli.main import main
from tdrm_rl.config import load_config
from tdrm_rl.data.rollout_file import write_jsonl
from tdrm_rl.models.prm_info import PRM_INFO_FILE
from tdrm_rl.prm_tools.offline import local_rollout_worker, sample_rollouts
from tdrm_rl.tasks import get_task
from tdrm_rl.workers.base import free_port
from tdrm_rl.workers.prm import PRMWorker

RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "recipes", "grpo_tdrm.yaml")
OVERRIDES = ["rollout.max_new_tokens=24", "prm.micro_batch_size=8", "trainer.torch_threads=1", "prm.gamma=0.5"]


def test_bon_uses_the_saved_discount_and_names_a_missing_one(tiny_path, tmp_path, capsys, one_thread):
    cfg = load_config(None, OVERRIDES + [f"trainer.output_dir={tmp_path}/run"])
    rollouts = write_jsonl(str(tmp_path / "rollouts.jsonl"),
                           sample_rollouts(cfg, local_rollout_worker(cfg, tiny_path),
                                           get_task(cfg.data).eval_problems(3), 2))
    worker = PRMWorker(cfg, tiny_path, num_threads=1)
    worker.setup_distributed("127.0.0.1", free_port())
    worker.setup()
    with_info = worker.save(str(tmp_path / "rl_prm"))  # as an RL checkpoint saves it: online TD, gamma 0.5
    without = str(tmp_path / "foreign_prm")
    shutil.copytree(with_info, without)
    os.remove(os.path.join(without, PRM_INFO_FILE))

    out = tmp_path / "bon"
    argv = ["bon", RECIPE, "--data", rollouts, "--prm", f"rl={with_info}", "--prm", f"foreign={without}",
            "--no-logprob-baseline", "--out", str(out), f"model.policy_path={tiny_path}", *OVERRIDES]
    assert main(argv) == 0
    prms = json.load(open(out / "bon.json"))["step_metrics"]["prms"]
    assert prms["rl"]["first_error_discount"] == 0.5
    assert prms["foreign"]["first_error_discount"] == 1.0
    err = capsys.readouterr().err
    assert f"{without} has no {PRM_INFO_FILE}" in err and with_info not in err
