"""A weight group whose PyNccl communicator disabled itself must fail, not broadcast nothing (review F10).

Real vLLM classes (StatelessProcessGroup over a TCPStore, PyNcclCommunicator), no GPU: on this machine libnccl
cannot be loaded, so the communicator disables itself, exactly as on a GPU node without NCCL or with
VLLM_DISABLE_PYNCCL=1. Both sides of the group (the trainer's rank 0 and an engine's rank 1) must refuse it.
"""

from __future__ import annotations

import threading

import pytest

from tdrm_rl.config import load_config
from tdrm_rl.workers.base import free_port
from tdrm_rl.workers.policy import PolicyWorker
from tdrm_rl.workers.weight_sync import WeightSyncError, require_pynccl


def test_both_sides_of_a_disabled_nccl_weight_group_raise(tmp_path):
    pytest.importorskip("vllm")
    import torch
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    port = free_port()
    sender = PolicyWorker(load_config(None, [f"trainer.output_dir={tmp_path}"]), str(tmp_path), num_threads=1)
    errors: dict[str, BaseException] = {}

    def receiver() -> None:  # what tdrm_init_weight_group does in a vLLM worker
        try:
            group = StatelessProcessGroup.create(host="127.0.0.1", port=port, rank=1, world_size=2, store_timeout=60)
            comm = PyNcclCommunicator(group, device=torch.device("cpu"))
            assert comm.disabled and not comm.available  # what made the old code broadcast nothing
            require_pynccl(comm, "rollout engine: weight group (rank 1 of 2)")
        except BaseException as e:  # noqa: BLE001 (handed to the main thread)
            errors["receiver"] = e

    thread = threading.Thread(target=receiver, daemon=True)
    thread.start()
    with pytest.raises(WeightSyncError, match="policy: weight group.*PyNcclCommunicator is disabled"):
        sender.init_weight_group("127.0.0.1", port, 2)
    thread.join(timeout=60)
    assert isinstance(errors.get("receiver"), WeightSyncError), errors
    assert "rollout.weight_sync=nccl" in str(errors["receiver"])
    # And a sender that never got a working communicator cannot start a broadcast.
    with pytest.raises(WeightSyncError, match="broadcast_weights"):
        sender.broadcast_weights([])
