"""`python -m bench [--quick]`: run every benchmark section, print tables, write reports/bench.{md,json}.

Sections: single-pass vs per-prefix PRM scoring, TD-target throughput, the RL step breakdown and
scaling, async vs sync rollout, one vs two PRM forwards per step, the update stage's schedule (a short PRM
update beside the policy's or alone before it), peak memory per role, TRL's GRPOTrainer
vs tdrm-rl, the wall time each of them takes to a held-out accuracy target (time to accuracy), and a
real-size row (SmolLM2-135M-Instruct: tdrm-rl with vLLM rollouts vs TRL, and async at that size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

from tdrm_rl.cli.runtime import set_runtime_defaults

set_runtime_defaults()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "grpo_tdrm.yaml")
# The recipe's shape: 16 prompts x G=8 = 128 trajectories, 96 new tokens. The throughput sections' SFT warm start
# is shorter than the recipe's (150 steps, as in the e2e tests): they need a policy that answers, not a good one.
# Time to accuracy starts from the recipe's own warm start (what `make run` trains from: ~74% held-out greedy):
# from the short one (~8%) neither arm gained within the step cap (reports/bench.md at 0739fe8).
SHORT_SFT = "sft.steps=150"
RUN_OVERRIDES = ["trainer.progress=false", "trainer.loggers=[jsonl]"]
OVERRIDES = [SHORT_SFT, *RUN_OVERRIDES]


SECTIONS = ("scoring", "td", "memory", "rl", "async", "trl", "tta", "reuse", "schedule", "real")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (for iterating)")
    p.add_argument("--out", default=os.path.join(ROOT, "reports"), help="folder for bench.md and bench.json")
    p.add_argument("--skip", default="", help=f"comma-separated sections to skip: {','.join(SECTIONS)}")
    return p.parse_args(argv)


def build_trainer(policy_path: str, out: str, *extra: str):
    return build_recipe_trainer(RECIPE, policy_path, out, *OVERRIDES, *extra)


def build_recipe_trainer(recipe: str, policy_path: str, out: str, *overrides: str):
    from bench.rl_step import BenchTrainer
    from tdrm_rl.config import load_config

    cfg = load_config(recipe, [*overrides, f"trainer.output_dir={out}"])
    return BenchTrainer(cfg, policy_path)


def write_reports(out_dir: str, results: dict[str, Any], tables: list) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench.json"), "w") as f:
        json.dump(results, f, indent=2, default=float)
    from bench.common import Table, verdict

    targets = Table("Targets", ["target", "measured", "status"])
    for t in results["targets"]:
        targets.add(t["target"], t["measured"], verdict(t["met"]))
    env = results["environment"]
    lines = ["# tdrm-rl benchmark", "",
             f"- machine: {env['cpus']} CPUs, {env['platform']}; load average {env['load_start']} at start, "
             f"{env['load_end']} at end (numbers from a shared machine are inflated and noisy)",
             f"- mode: {'quick' if results['quick'] else 'full'}; total wall time {results['total_s']:.0f} s",
             f"- policy: embedded tiny Qwen2 ({SHORT_SFT}; time to accuracy: the recipe's own warm start); "
             f"recipe {os.path.relpath(RECIPE, ROOT)}", "",
             targets.markdown()]
    lines += [t.markdown() for t in tables]
    with open(os.path.join(out_dir, "bench.md"), "w") as f:
        f.write("\n".join(lines))
    print(targets.text())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    unknown = skip - set(SECTIONS)
    if unknown:
        print(f"bench: unknown section(s) in --skip: {sorted(unknown)}", file=sys.stderr)
        return 2
    start = time.time()
    import ray

    from bench import (logprob_memory, prm_reuse, real_size, rl_step, scoring, td_throughput, time_to_accuracy,
                       trl_compare, update_schedule)
    from tdrm_rl.config import load_config
    from tdrm_rl.models.load import set_cpu_defaults
    from tdrm_rl.models.sft import ensure_policy

    set_cpu_defaults(0)
    results: dict[str, Any] = {"quick": args.quick, "targets": [],
                               "environment": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                               "python": sys.version.split()[0],
                                               "load_start": [round(x, 2) for x in os.getloadavg()]}}
    tables: list = []

    def record(name: str, section: tuple) -> None:
        data, section_tables = section
        results[name] = data
        results["targets"] += data.get("targets", [])
        tables.extend(section_tables)
        for t in section_tables:
            print("\n" + t.text(), flush=True)

    work = tempfile.mkdtemp(prefix="tdrm-bench-")
    cfg = load_config(RECIPE, OVERRIDES + [f"trainer.output_dir={work}/sft"])
    policy_path = ensure_policy(cfg, progress=False)
    trajectories = 32 if args.quick else 128  # the recipe's 16 prompts x G=8 in a full run
    max_new = cfg.rollout.max_new_tokens
    if "scoring" not in skip:
        record("prm_scoring", scoring.run(policy_path, args.quick))
    if "td" not in skip:
        record("td_targets", td_throughput.run(args.quick))
    if "memory" not in skip:
        record("logprob_memory", logprob_memory.run(args.quick))
    if skip >= {"rl", "async", "trl", "tta", "reuse", "schedule", "real"}:
        return finish(args, results, tables, start)

    # Logical CPUs only: two trainers (six actors) must fit; each actor pins its own torch threads.
    ray.init(address="local", num_cpus=8, include_dashboard=False, logging_level="WARNING")
    # Every section trains its policy as it measures, and the policy drifts (e.g. the length scaling's
    # no-EOS steps teach it longer answers), so each comparison starts from fresh trainers of the same checkpoint.
    try:
        if "trl" not in skip:
            fresh = build_trainer(policy_path, f"{work}/trl")
            record("trl_comparison", trl_compare.run(fresh, policy_path, args.quick, trajectories, max_new))
            fresh.kill()
        if "tta" not in skip:
            recipe_cfg = load_config(RECIPE, [*RUN_OVERRIDES, f"trainer.output_dir={work}/sft-recipe"])
            recipe_policy = ensure_policy(recipe_cfg, progress=False)  # cached under model.cache_dir, as make run's
            build = lambda name, *extra: build_recipe_trainer(  # noqa: E731
                RECIPE, recipe_policy, f"{work}/{name}", *RUN_OVERRIDES, *extra)
            record("time_to_accuracy", time_to_accuracy.run(recipe_cfg, recipe_policy, build, args.quick))
        sync = build_trainer(policy_path, f"{work}/sync")
        if "async" not in skip:
            async_ = build_trainer(policy_path, f"{work}/async", "trainer.async_rollout=true",
                                   "trainer.total_steps=1000000")
            record("async_rollout", rl_step.run_async(sync, async_, args.quick, trajectories, max_new))
            async_.kill()
        if "rl" not in skip:
            sync.set_shape(trajectories, max_new)
            sync.step(1)  # first-step warm-up (allocator, DeepSpeed) off the clock
            prm_wall_share = results.get("trl_comparison", {}).get("prm_critical_path_share")
            record("rl_step", rl_step.run_sync(sync, args.quick, max_new, prm_wall_share))
        if "reuse" not in skip:
            fresh = build_trainer(policy_path, f"{work}/reuse")
            record("prm_reuse", prm_reuse.run(fresh, args.quick, trajectories, max_new))
            fresh.kill()
        if "schedule" not in skip:
            build = lambda name, *extra: build_trainer(policy_path, f"{work}/{name}", *extra)  # noqa: E731
            record("update_schedule", update_schedule.run(build, args.quick, trajectories, max_new))
        record("memory", rl_step.run_memory(sync))
        sync.kill()
        if "real" not in skip:
            record("real_size", real_size.run(ROOT, work, args.quick, build_recipe_trainer))
    finally:
        ray.shutdown()
    return finish(args, results, tables, start)


def finish(args: argparse.Namespace, results: dict[str, Any], tables: list, start: float) -> int:
    results["total_s"] = time.time() - start
    results["environment"]["load_end"] = [round(x, 2) for x in os.getloadavg()]
    write_reports(args.out, results, tables)
    print(f"\nwrote {os.path.join(args.out, 'bench.md')} and bench.json in {results['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
