"""How the driver shares CPU cores between roles (pure functions, no Ray actors)."""

import pytest
import torch

from tdrm_rl.config import load_config
from tdrm_rl.rl.cores import PRM_ALONE_BELOW, CoreShare, stage_threads, thread_split
from tdrm_rl.workers.base import BaseWorker


def test_sync_step_trainers_share_every_core() -> None:
    cfg = load_config(None, [])
    assert thread_split(cfg, 8) == (8, 4)  # rollout alone; policy and PRM start on half each
    assert stage_threads(cfg, 8, 1) == 8  # PRM values pass, or a policy update with the PRM frozen
    assert stage_threads(cfg, 8, 2) == 4  # policy update beside the PRM TD update
    assert stage_threads(cfg, 2, 3) == 1  # never below one thread
    assert stage_threads(cfg, 1, 2) == 1


@pytest.mark.parametrize("override", ["trainer.async_rollout=true", "trainer.torch_threads=3",
                                      "cluster.num_gpus_per_worker=1"])
def test_stage_threads_left_alone(override: str) -> None:
    """Generation beside the trainers, a user's own thread count, or GPUs: the start value stays."""
    assert stage_threads(load_config(None, [override]), 8, 1) == 0


def test_async_and_explicit_thread_split() -> None:
    assert thread_split(load_config(None, ["trainer.async_rollout=true"]), 8) == (4, 4)
    assert thread_split(load_config(None, ["trainer.torch_threads=3"]), 8) == (3, 3)


def test_worker_uses_the_threads_of_its_stage() -> None:
    old = torch.get_num_threads()
    try:
        worker = BaseWorker(load_config(None, []), num_threads=1)
        assert torch.get_num_threads() == 1
        worker.use_threads(2)
        assert torch.get_num_threads() == 2
        worker.use_threads(0)  # 0: keep
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("override,cores,alone", [([], 2, True), (["trainer.async_rollout=true"], 2, False),
                                                  (["trainer.torch_threads=1"], 2, False),
                                                  (["cluster.num_gpus_per_worker=1"], 2, False), ([], 1, False)])
def test_short_prm_update_alone_only_where_the_update_stage_splits_cores(override, cores, alone) -> None:
    share = CoreShare(load_config(None, override), cores)
    assert not share.prm_update_alone()  # nothing measured yet
    share.record_update({"timing_s/policy_update": 1.0, "timing_s/prm_update": PRM_ALONE_BELOW * 0.9})
    assert share.prm_update_alone() == alone
    share.record_update({"timing_s/policy_update": 1.0, "timing_s/prm_update": PRM_ALONE_BELOW * 1.1})
    assert not share.prm_update_alone()
    share.record_update({"timing_s/policy_update": 1.0})  # a step without a PRM update keeps the last ratio
    assert share.prm_to_policy == pytest.approx(PRM_ALONE_BELOW * 1.1)
