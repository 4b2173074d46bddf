"""The vLLM rollout worker's sleep / wake calls, colocated with sleep mode (reviews F5, F16, F2), against a stand-in
for `vllm.LLM` that records each call: vLLM's sleep mode needs a GPU, the order of the calls does not.

  - one sleep when the trainers compute next, at level 1 (the weights it keeps are the next rollout's after a
    checkpoint sleep);
  - a weight load wakes the weights alone (the trainer's IPC buckets are still on the GPU), loads, resets the prefix
    cache; the KV cache is mapped back by the next generation, which resets the cache once more when fully awake;
  - a sleep while only the weights are awake still offloads them (a checkpoint right after a load);
  - calls on an awake engine wake nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tdrm_rl.config import load_config
from tdrm_rl.workers.rollout.vllm_engine import VLLMRolloutWorker

COLOCATED = ["rollout.backend=vllm", "cluster.colocate=true", "rollout.enable_sleep_mode=true",
             "cluster.gpus_per_node=1", "rollout.gpu_memory_utilization=0.3"]


class RecordingLLM:
    """What the worker calls on vllm.LLM, recorded in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def sleep(self, level: int = 1) -> None:
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None) -> bool:
        self.calls.append(("wake_up", tuple(tags) if tags is not None else None))
        return True

    def reset_prefix_cache(self) -> bool:
        self.calls.append(("reset_prefix_cache",))
        return True

    def collective_rpc(self, method: str, args=(), timeout=None):
        self.calls.append(("collective_rpc", method))
        return [0]

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append(("generate", len(prompts)))
        return [SimpleNamespace(num_cached_tokens=3, outputs=[SimpleNamespace(index=0, token_ids=[5], logprobs=[
            {5: SimpleNamespace(logprob=-0.5)}])]) for _ in prompts]


class CharTokenizer:
    eos_token_id = 0
    bos_token = None

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[1 + ord(c) % 50 for c in t] for t in texts]}

    def decode(self, ids, skip_special_tokens=True):
        return "x" * len(ids)


@pytest.fixture
def worker():
    w = VLLMRolloutWorker(load_config(None, COLOCATED), "unused")
    w.gpu, w.llm = True, RecordingLLM()
    return w


def test_one_step_sleeps_once_at_level_1_and_a_load_wakes_the_weights_before_the_kv_cache(worker):
    plan = [[("w", "float32", (2,))]]
    worker.sleep()  # the trainers compute
    worker.sleep()  # a second sleep before anything woke it does nothing
    assert worker.asleep_tags == {"weights", "kv_cache"}
    assert worker.load_weights_ipc(plan, {"gpu": []}, version=1) == 1
    assert worker.asleep_tags == {"kv_cache"}  # the weights are back, the KV cache not yet
    worker.llm.calls.append("--- next rollout")
    worker.llm.generate = RecordingLLM.generate.__get__(worker.llm)
    worker.tokenizer = CharTokenizer()
    worker.sampling_params = lambda s, n: None  # vLLM's SamplingParams are not under test here
    worker.generate(["abc"], 1, {})
    assert not worker.asleep and worker.cached_prompt_tokens == [3]
    assert worker.llm.calls == [
        ("sleep", 1),
        ("wake_up", ("weights",)), ("collective_rpc", "tdrm_load_ipc"), ("reset_prefix_cache",),
        "--- next rollout",
        ("wake_up", ("kv_cache",)), ("reset_prefix_cache",), ("generate", 1)]


@pytest.mark.parametrize("load", ["update_weights", "receive_weights_nccl", "load_weights_ipc"])
def test_every_load_path_wakes_the_weights_only_and_resets_the_prefix_cache(worker, load):
    plan = [[("w", "float32", (2,))]]
    args = {"update_weights": ({"w": torch.zeros(2)}, 4), "receive_weights_nccl": (plan, 4),
            "load_weights_ipc": (plan, {"gpu": []}, 4)}[load]
    worker.sleep()
    assert getattr(worker, load)(*args) == 4 and worker.weights_version == 4
    assert worker.llm.calls[1] == ("wake_up", ("weights",)) and worker.llm.calls[-1] == ("reset_prefix_cache",)
    assert [c[0] for c in worker.llm.calls].count("collective_rpc") == 1


def test_a_sleep_after_a_load_offloads_the_woken_weights(worker):
    """The checkpoint after a step's sync: the weights were woken for the load, the KV cache was not."""
    worker.sleep()
    worker.receive_weights_nccl([[("w", "float32", (2,))]], 2)
    worker.sleep()
    assert worker.llm.calls[-1] == ("sleep", 1) and worker.asleep_tags == {"weights", "kv_cache"}
    worker.wake_up()
    assert worker.llm.calls[-2:] == [("wake_up", ("weights", "kv_cache")), ("reset_prefix_cache",)]


def test_an_awake_engine_wakes_nothing_and_without_colocation_never_sleeps(worker):
    worker.receive_weights_nccl([[("w", "float32", (2,))]], 1)
    assert worker.llm.calls == [("collective_rpc", "tdrm_receive_broadcast"), ("reset_prefix_cache",)]
    worker.cfg.cluster.colocate = False
    worker.sleep()
    assert ("sleep", 1) not in worker.llm.calls


def test_a_refused_prefix_cache_reset_is_an_error(worker):
    from tdrm_rl.workers.weight_sync import WeightSyncError

    worker.llm.reset_prefix_cache = lambda: False
    with pytest.raises(WeightSyncError, match="did not reset its prefix cache after receive_weights_nccl"):
        worker.receive_weights_nccl([[("w", "float32", (2,))]], 1)
