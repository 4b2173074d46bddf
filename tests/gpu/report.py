"""reports/gpu_check.md from a device check's results (tests/gpu/check_vllm.py): what ran, on what, with which
numbers, and what did not run and why. Every row comes from the results; nothing here is written by hand."""

from __future__ import annotations

from typing import Any

# What a PASS of each section shows a user (the claim the row stands for).
SHOWS = {
    "hf_generate_bf16": "the HF rollout backend generates in bf16 on the GPU",
    "prm_single_pass": "one PRM forward pass gives every step's value, equal to scoring each prefix alone",
    "logprob_memory": "the chunked LM head's peak memory at the full vocabulary, against full float32 logits",
    "deepspeed_policy": "a DeepSpeed ZeRO-2 bf16 policy update (peak memory), then the in-process weight sync",
    "deepspeed_prm": "a DeepSpeed ZeRO-2 bf16 PRM TD update (peak memory)",
    "cuda_ipc": "the CUDA IPC hand-off of an untied and a tied model's buckets, every tensor equal",
    "vllm_rl_steps": "two RL steps with vLLM rollout and ZeRO-2 trainers: the weight sync, the stage timings, the "
                     "logprob gap, and after a sync no prefix-cache block from before it and fresh logprobs, where a "
                     "sync with the rollout worker's resets off leaves stale blocks in use (on a GPU also the free "
                     "memory with the engine asleep and awake)",
    "vllm_nccl_sync": "the nccl broadcast from a policy rank into a vLLM engine on another GPU, and the prefix "
                      "cache after it (the same check and control arm)",
}
HIDDEN = ("ok", "status", "wall_s", "trace", "skip", "error")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def numbers(result: dict, prefix: str = "") -> list[str]:
    """`key=value` for every reported number, nested sections flattened as `section.key`."""
    out = []
    for key, value in result.items():
        if key in HIDDEN:
            continue
        if isinstance(value, dict):
            out += numbers(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={_fmt(value)}")
    return out


def render(report: dict) -> str:
    """The markdown report of one run of the device check."""
    checks: dict[str, dict] = report["checks"]
    versions = ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items())
    lines = [f"# Device check: {report['device']} ({report.get('gpus', 0)} GPU), {report['date']}", "",
             f"Command: `{report.get('command', 'python tests/gpu/check_vllm.py')}`. Stack: {versions}.", "",
             f"Models: random weights, size `{report['size']}` (tests/gpu/models.py). Written by "
             "tests/gpu/report.py from the run's own results (gpu_check_vllm.json beside it).", "",
             "| section | status | seconds | numbers |", "|---|---|---|---|"]
    for name, result in checks.items():
        detail = result.get("skip") or result.get("error") or "; ".join(numbers(result))
        lines.append(f"| {name} | {result['status']} | {result['wall_s']:.1f} | {detail.replace('|', '/')} |")
    passed = [n for n, r in checks.items() if r["status"] == "PASS"]
    missing = [n for n, r in checks.items() if r["status"] != "PASS"]
    lines += ["", "## What this run shows", ""]
    lines += [f"- {SHOWS.get(n, n)} (`{n}`)." for n in passed] or ["- Nothing passed."]
    lines += ["", "## What it does not show", ""]
    lines += [f"- `{n}` {checks[n]['status']}: {checks[n].get('skip') or checks[n].get('error', '')}" for n in missing]
    lines += [f"- {text} (`{name}`): not in this run." for name, text in SHOWS.items() if name not in checks]
    if not missing and all(name in checks for name in SHOWS):
        lines.append("- Every section ran and passed.")
    return "\n".join(lines) + "\n"
