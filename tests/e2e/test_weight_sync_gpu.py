"""The GPU weight-sync paths: NCCL broadcast (separate GPUs) and CUDA IPC (colocated, with vLLM sleep/wake).
They need a CUDA build of vLLM, Ray and GPUs; without CUDA they are skipped (tests/conftest.py)."""

import pytest
import torch

from tdrm_rl.rl.trainer import RLTrainer
from tests.e2e.conftest import tiny_config
from tests.e2e.test_weight_sync import fixed_batch, grpo_update, max_gap

pytestmark = pytest.mark.gpu


def gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def sync_roundtrip(trainer):
    batch = fixed_batch(trainer)
    grpo_update(trainer)
    assert max_gap(trainer, batch) > 1e-3
    trainer.sync_weights()
    # bf16 engine vs bf16 trainer: same weights, different kernels.
    assert max_gap(trainer, batch) < 5e-2


def test_nccl_broadcast_sync_on_separate_gpus(ray_local, tmp_path, tiny_cache, tiny_policy):
    if gpus() < 3:
        pytest.skip("needs 3 GPUs: rollout, policy and PRM each on their own")
    cfg = tiny_config(tmp_path, tiny_cache, "rollout.backend=vllm", f"cluster.gpus_per_node={gpus()}",
                      "rollout.gpu_memory_utilization=0.3")
    trainer = RLTrainer(cfg, tiny_policy)
    try:
        assert trainer.weight_sync.mode == "nccl"
        sync_roundtrip(trainer)
    finally:
        trainer.shutdown()


def test_ipc_sync_colocated_with_sleep_mode(ray_local, tmp_path, tiny_cache, tiny_policy):
    if gpus() < 1:
        pytest.skip("needs a GPU")
    cfg = tiny_config(tmp_path, tiny_cache, "rollout.backend=vllm", "cluster.gpus_per_node=1", "cluster.colocate=true",
                      "rollout.enable_sleep_mode=true", "rollout.gpu_memory_utilization=0.3")
    trainer = RLTrainer(cfg, tiny_policy)
    try:
        assert trainer.weight_sync.mode == "ipc"
        engine = trainer.rollout.actors[0]
        free_asleep = trainer.rollout.get(engine.__ray_call__.remote(lambda self: torch.cuda.mem_get_info()[0]), "mem")
        trainer.rollout.run_rank0("wake_up")
        free_awake = trainer.rollout.get(engine.__ray_call__.remote(lambda self: torch.cuda.mem_get_info()[0]), "mem")
        trainer.rollout.run_rank0("sleep")
        assert free_asleep > free_awake  # sleeping hands the KV cache and weights' GPU memory back
        sync_roundtrip(trainer)
    finally:
        trainer.shutdown()
