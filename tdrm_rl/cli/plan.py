"""`tdrm-rl plan RECIPE [key=value ...]`: the recipe's GPU memory, per role and per GPU, without a GPU."""

from __future__ import annotations

import argparse

from tdrm_rl.config import RunConfig

HELP = "dry run: each GPU's memory for the recipe's layout (estimates, no GPU needed), and whether it fits"
DESCRIPTION = """\
Read the recipe and the model's config.json (a local folder, the Hugging Face cache, or the copy bundled for
the recipe families; offline) and print, per role and per GPU: parameters, the optimizer and gradient state
under the ZeRO stage, activations and logits at the recipe's micro-batch and lengths, the vLLM engine's
weights and KV cache, the weight sync's peaks; then whether each GPU fits, and the largest
rollout.max_new_tokens / policy.micro_batch_size / prm.micro_batch_size that would. Exit 0 when it fits, 1 when
not. `train` runs the same check before starting Ray (cluster.skip_plan=true to insist). Key assumptions:
cluster.gpu_memory_gib (GPU size) and cluster.plan_prompt_tokens (the longest prompt)."""


def cmd_plan(args: argparse.Namespace, cfg: RunConfig) -> int:
    from tdrm_rl.sizing import build_plan, plan_text

    plan = build_plan(cfg)
    print(plan_text(plan, args.recipe), end="")
    return 0 if plan.fits else 1
