"""A death on one side of the nccl weight broadcast (review F7): NCCL has no timeout, so the other side would block
in the collective for good, and every later call on its actors with it (the recovery's new WeightSync, the rewind's
checkpoint load). WeightSync waits on both sides at once; the first death restarts the other side's group and is
raised as that role's WorkerDied, at once, for RLTrainer.recover to restart the dead side.

Real Ray actors stand in for the two sides (vLLM's PyNccl needs CUDA): a survivor that never returns from its half of
the broadcast, as one blocked in NCCL, and a peer that dies in its half."""

from __future__ import annotations

import os
import sys
import time

import pytest
import ray

from tdrm_rl.config import load_config
from tdrm_rl.workers.base import BaseWorker
from tdrm_rl.workers.group import RoleError, WorkerDied, WorkerGroup
from tdrm_rl.workers.weight_sync import WeightSync

pytestmark = pytest.mark.e2e  # starts Ray actors


class Side(BaseWorker):
    """Either side of the broadcast; `dies` picks the one that dies in it, the other blocks."""

    def __init__(self, cfg, rank: int = 0, world_size: int = 1, dies: bool = False) -> None:
        super().__init__(cfg, rank, world_size, num_threads=1)
        self.dies = dies

    def setup(self) -> None:
        pass

    def _half(self) -> int:
        if self.dies:
            os._exit(1)
        time.sleep(3600)  # a NCCL broadcast whose peer is gone never returns
        return 0

    def broadcast_weights(self, plan) -> int:
        return self._half()

    def receive_weights_nccl(self, plan, version: int) -> int:
        return self._half()


def nccl_sync(policy: WorkerGroup, rollout: WorkerGroup, timeout: float) -> WeightSync:
    sync = object.__new__(WeightSync)  # the driver's side alone, on the stand-in groups
    sync.policy, sync.rollout, sync.timeout, sync.mode, sync.file_on_node = policy, rollout, timeout, "nccl", False
    sync.plan = [[("w", "bfloat16", (4,))]]
    return sync


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"trainer.output_dir={tmp_path}", "trainer.torch_threads=1"])


@pytest.mark.parametrize("dead, stuck", [("rollout", "policy"), ("policy", "rollout")])
def test_a_death_in_the_broadcast_restarts_the_blocked_side_and_names_the_dead_one(ray_local, cfg, dead, stuck):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ship the stand-in class by value
    groups = {role: WorkerGroup(Side, role, cfg, num_cpus=0, dies=role == dead) for role in ("policy", "rollout")}
    try:
        blocked_pid = groups[stuck].run_rank0("pid")
        started = time.monotonic()
        with pytest.raises(WorkerDied) as err:
            nccl_sync(groups["policy"], groups["rollout"], timeout=600.0).sync(1)
        assert err.value.role == dead and "weight_sync[nccl]" in str(err.value)
        assert time.monotonic() - started < 300, "waited on the blocked side"
        # The blocked side was replaced: its new actor answers at once (the old one would queue the call for good).
        assert groups[stuck].restarts == 1 and groups[dead].restarts == 0
        groups[stuck].timeout = 120.0
        assert groups[stuck].run_rank0("pid") != blocked_pid
    finally:
        for group in groups.values():
            group.kill()


def test_a_broadcast_that_overruns_names_both_sides_and_the_key(ray_local, cfg):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    groups = {role: WorkerGroup(Side, role, cfg, num_cpus=0) for role in ("policy", "rollout")}
    try:
        with pytest.raises(RoleError) as err:
            nccl_sync(groups["policy"], groups["rollout"], timeout=2.0).sync(1)
        assert not isinstance(err.value, WorkerDied)
        assert str(err.value) == ("policy (broadcast), rollout (receive): stage 'weight_sync[nccl]' did not finish "
                                  "within 2 s (rollout.sync_timeout_s)")
        assert groups["policy"].restarts == groups["rollout"].restarts == 0
    finally:
        for group in groups.values():
            group.kill()
