"""Fault recovery rebuilds the weight sync after a restart (review F7), on the CPU `inprocess` path with real roles
in this process (HF rollout, DeepSpeed policy on a one-rank gloo group) through LocalGroup, no Ray.

Under nccl a restarted rollout actor has no communicator and the policy's names a dead peer, so `recover` must build a
new WeightSync (new group) before it re-pushes the weights; the rebuild is the same code on every path."""

from __future__ import annotations

import pytest
import torch

from tdrm_rl.config import load_config
from tdrm_rl.rl.trainer import RLTrainer
from tdrm_rl.workers.base import free_port
from tdrm_rl.workers.group import LocalGroup, WorkerDied
from tdrm_rl.workers.policy import PolicyWorker
from tdrm_rl.workers.rollout.hf import RolloutWorker
from tdrm_rl.workers.weight_sync import WeightSync

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = ["rollout.prompts_per_step=2", "rollout.group_size=2", "policy.micro_batch_size=4", "trainer.torch_threads=1",
         "cluster.max_restarts=2"]


class RestartableGroup(LocalGroup):
    """A LocalGroup whose restart builds fresh workers (initial weights, no sync state), as WorkerGroup does."""

    def __init__(self, make, role: str) -> None:
        self.make = make
        super().__init__([make()], role)

    def restart(self) -> None:
        self.restarts += 1
        self.workers = [self.make()]
        self.actors = LocalGroup(self.workers, self.role).actors


def test_a_rollout_restart_builds_a_new_weight_sync_and_reloads_the_last_weights(tiny_path, tmp_path):
    cfg = load_config(None, SIZES + [f"trainer.output_dir={tmp_path}"])
    policy = PolicyWorker(cfg, tiny_path, num_threads=1)
    policy.setup_distributed("127.0.0.1", free_port())
    policy.setup()

    def new_rollout():
        worker = RolloutWorker(cfg, tiny_path, num_threads=1)
        worker.setup()
        return worker

    trainer = object.__new__(RLTrainer)  # the recovery logic alone, on in-process groups
    trainer.cfg, trainer.out = cfg, str(tmp_path)
    trainer.counters = {"restarts": 0, "nonfinite_in_a_row": 0, "nonfinite_total": 0}
    trainer.rollout = RestartableGroup(new_rollout, "rollout")
    trainer.policy, trainer.prm = LocalGroup([policy], "policy"), LocalGroup([], "prm")
    trainer.weight_sync = WeightSync(cfg, trainer.policy, trainer.rollout)
    assert trainer.weight_sync.mode == "inprocess"

    # The policy moved on and its weights went out as version 3.
    with torch.no_grad():
        for p in policy.engine.module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    trainer.weights_version = 3
    trainer.weight_sync.sync(3)
    old_sync, old_worker = trainer.weight_sync, trainer.rollout.workers[0]

    assert trainer.recover(WorkerDied("rollout", "rollout: worker died during stage 'generate'")) is None

    fresh = trainer.rollout.workers[0]
    assert fresh is not old_worker and trainer.rollout.restarts == 1 and trainer.counters["restarts"] == 1
    assert trainer.weight_sync is not old_sync, "recover re-pushed weights through the sync built for the dead actors"
    assert trainer.weight_sync.rollout is trainer.rollout and trainer.weight_sync.mode == "inprocess"
    assert fresh.weights_version == 3
    expected = policy.export_state_dict()
    got = fresh.model.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
