import threading

import pytest
import torch

from tdrm_rl.config import ConfigError, load_config
from tdrm_rl.models.generation import Generated
from tests.e2e.conftest import RECIPE
from tdrm_rl.workers.rollout.vllm_extension import unflatten_bucket
from tdrm_rl.workers.weight_sync import WeightSyncError, WeightsLock, bucket_plan, resolve_weight_sync


def cfg(*overrides):
    return load_config(RECIPE, list(overrides))


@pytest.mark.parametrize("overrides, expected", [
    ([], "inprocess"),
    (["rollout.backend=vllm"], "reload"),
    (["rollout.backend=vllm", "cluster.gpus_per_node=8"], "nccl"),
    (["rollout.backend=vllm", "cluster.gpus_per_node=8", "cluster.colocate=true"], "ipc"),
    (["rollout.backend=vllm", "cluster.gpus_per_node=8", "rollout.weight_sync=reload"], "reload"),
])
def test_auto_weight_sync_follows_backend_and_layout(overrides, expected):
    c = cfg(*overrides)
    assert resolve_weight_sync(c.rollout, c.cluster.colocate, c.cluster.uses_gpu) == expected


@pytest.mark.parametrize("overrides, key", [
    (["rollout.weight_sync=reload"], "rollout.weight_sync"),
    (["rollout.backend=vllm", "rollout.weight_sync=inprocess"], "rollout.weight_sync"),
    (["rollout.backend=vllm", "rollout.weight_sync=ipc"], "rollout.weight_sync"),
    (["rollout.weight_sync=carrier-pigeon"], "rollout.weight_sync"),
    (["rollout.enable_sleep_mode=true"], "rollout.enable_sleep_mode"),
    (["rollout.tensor_parallel_size=2"], "rollout.tensor_parallel_size"),
    (["rollout.backend=vllm", "rollout.tensor_parallel_size=4", "cluster.gpus_per_node=2"],
     "rollout.tensor_parallel_size"),
    (["rollout.backend=vllm", "rollout.tensor_parallel_size=2", "cluster.colocate=true"],
     "rollout.tensor_parallel_size"),
    (["rollout.gpu_memory_utilization=1.5"], "rollout.gpu_memory_utilization"),
    (["rollout.sync_timeout_s=0"], "rollout.sync_timeout_s"),
    (["policy.world_size=0"], "policy.world_size"),
    (["prm.world_size=0"], "prm.world_size"),
    (["cluster.placement_strategy=ANYWHERE"], "cluster.placement_strategy"),
    (["rollout.dtype=int3"], "rollout.dtype"),
])
def test_bad_layout_is_an_error_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg(*overrides)


def test_bucket_plan_keeps_order_splits_by_size_and_dtype_and_roundtrips():
    params = [("a", torch.float32, (4, 4)), ("b", torch.float32, (8,)), ("c", torch.float32, (2, 2)),
              ("d", torch.bfloat16, (3,)), ("e", torch.float32, (100,))]
    plan = bucket_plan(params, bucket_bytes=100)
    # 64 + 32 bytes fit in 100; "c" would overflow; the bf16 "d" starts its own; "e" alone exceeds the size.
    assert [[n for n, _, _ in b] for b in plan] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert plan[2][0][1] == "bfloat16"
    tensors = {n: torch.randn(s) for n, dt, s in params if dt == torch.float32}
    flat = torch.cat([tensors[n].reshape(-1) for n, _, _ in plan[0]])
    back = dict(unflatten_bucket(flat, plan[0]))
    assert torch.equal(back["a"], tensors["a"]) and torch.equal(back["b"], tensors["b"])


def test_weights_lock_makes_rollout_wait_then_fail_clearly():
    lock = WeightsLock("rollout[0]", timeout_s=0.2)
    with lock.hold("update_weights"):
        errors = []
        # Another thread (a generate call) while the sync holds the lock.
        t = threading.Thread(target=lambda: errors.append(
            pytest.raises(WeightSyncError, lock.hold("generate").__enter__)))
        t.start()
        t.join()
        assert "rollout.sync_timeout_s" in str(errors[0].value) and "generate" in str(errors[0].value)
    with lock.hold("generate"):  # free again once the sync is done
        assert lock.locked()


def test_hf_rollout_worker_is_locked_while_weights_move(tok, tmp_path):
    from tdrm_rl.models.load import build_tiny_policy
    from tdrm_rl.workers.rollout.hf import RolloutWorker

    c = cfg("rollout.sync_timeout_s=0.3", "rollout.max_new_tokens=4")
    build_tiny_policy(tok, c.model, seed=0).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    worker = RolloutWorker(c, str(tmp_path), num_threads=1)
    worker.setup()
    state = {k: v.clone() + 0.01 for k, v in worker.model.state_dict().items()}
    with worker.lock.hold("update_weights"):  # a sync in flight
        with pytest.raises(WeightSyncError, match="generate"):
            worker.generate(["1+1="], 1, {})
    assert isinstance(worker.generate(["1+1="], 1, {}), Generated)
    assert worker.update_weights(state, version=3) == 3
    assert torch.equal(worker.model.state_dict()["lm_head.weight"], state["lm_head.weight"])
