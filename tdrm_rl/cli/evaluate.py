"""`tdrm-rl eval`: held-out accuracy of a policy checkpoint. Thin: resolve the checkpoint, build the task through
the one prompt path, run tdrm_rl.evaluation (the code train's in-run evaluation runs), print a table, write files."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from typing import Any

from tdrm_rl.cli.offline import UsageError, _positive
from tdrm_rl.config import RunConfig

DESCRIPTION = """\
Evaluate a policy on the recipe task's held-out problems: greedy accuracy, sampled accuracy at a temperature,
and pass@k / maj@k (majority vote over the final answers) for k = 1, 2, 4 ... --samples. The checkpoint is
model.policy_path: an HF model folder, a model name (smollm2-135m), a checkpoint folder (step_N/), or a run folder
(trainer.output_dir: its newest complete checkpoint); unset, the embedded warm start. Any task works by override
(data.num_ops=4 data.seed=7, data.task=reasoning_gym:chain_sum, ...), with rollout.backend=hf or vllm. --prm adds
PRM-reranked Best-of-N. Writes OUT/eval.json, OUT/greedy.jsonl and OUT/samples.jsonl (rollouts files: `tdrm-rl bon`
reads them)."""


def add_eval_parser(sub: Any, recipe_command: Any, prepare: Any) -> None:
    """The `eval` subcommand on `sub` (recipe_command: tdrm_rl.cli.main's; `prepare(cfg)` resolves and checks
    models)."""
    def handler(args: argparse.Namespace, cfg: RunConfig) -> int:
        return cmd_eval(args, cfg, prepare)

    p = recipe_command(sub, "eval", handler, help="held-out greedy / sampled accuracy, pass@k and maj@k of a "
                       "checkpoint (a run folder: its newest)", description=DESCRIPTION,
                       recipe_help="recipe YAML (model, data and rollout sections are used)",
                       one_line_errors=(UsageError, ValueError))
    p.add_argument("-n", "--samples", type=_positive, default=8,
                   help="sampled responses per problem; pass@k and maj@k up to this k (default 8)")
    p.add_argument("--temperature", type=_temperature, default=None,
                   help="temperature of the sampled responses (default rollout.eval_temperature)")
    p.add_argument("--problems", type=_positive, default=None, help="held-out problems (default data.eval_size)")
    p.add_argument("--prm", default=None, metavar="PATH",
                   help="also PRM-reranked Best-of-N: a PRM folder, a checkpoint or a run folder (its prm/)")
    p.add_argument("--agg", default="min,last", help="PRM step-value aggregations for --prm (default min,last)")
    p.add_argument("--out", default=None, help="output directory (default: RUN/eval for a run folder, else runs/eval)")


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a temperature >= 0, got {text}")
    return value


def _aggregations(text: str) -> list[str]:
    from tdrm_rl.prm_tools.bon import BON_AGGREGATIONS

    aggs = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in aggs if a not in BON_AGGREGATIONS]
    if bad or not aggs:
        raise UsageError(f"--agg: unknown aggregation(s) {bad}; known: {', '.join(BON_AGGREGATIONS)}")
    return aggs


def resolve_prm(path: str) -> str:
    """The PRM folder --prm names: a PRM folder as is, or a checkpoint's / a run's newest prm/."""
    from tdrm_rl.evaluation.checkpoints import resolve_model_source

    source = resolve_model_source(path)
    if source.checkpoint is None:
        if not os.path.isdir(path):
            raise UsageError(f"--prm: no such folder: {path}")
        return path
    if source.prm is None:
        raise UsageError(f"--prm {path}: checkpoint {source.checkpoint} holds no prm/ folder")
    return source.prm


def cmd_eval(args: argparse.Namespace, cfg: RunConfig, prepare: Any) -> int:
    import torch

    from tdrm_rl.evaluation.checkpoints import resolve_model_source
    from tdrm_rl.evaluation.core import EvalSettings, evaluate_policy
    from tdrm_rl.models.load import set_cpu_defaults
    from tdrm_rl.models.sft import ensure_policy
    from tdrm_rl.prm_tools.offline import close_rollout_worker, local_rollout_worker
    from tdrm_rl.tasks.prompts import load_prompted_task

    aggs = _aggregations(args.agg) if args.prm else []
    prm_path = resolve_prm(args.prm) if args.prm else None
    source = resolve_model_source(cfg.model.policy_path)  # a run folder or a checkpoint -> its policy/
    out = args.out or (os.path.join(source.run, "eval") if source.run else os.path.join("runs", "eval"))
    cfg.model.policy_path = source.policy
    prepare(cfg)  # model names resolved, explicit folders checked: one line if unusable
    set_cpu_defaults(cfg.trainer.torch_threads)
    policy_path = ensure_policy(cfg, progress=cfg.trainer.progress)
    task, tokenizer = load_prompted_task(cfg, policy_path)
    problems = task.eval_problems(args.problems or cfg.data.eval_size)
    temperature = cfg.rollout.eval_temperature if args.temperature is None else args.temperature
    t0 = time.perf_counter()
    worker = local_rollout_worker(cfg, policy_path, backend=cfg.rollout.backend)
    try:
        torch.manual_seed(cfg.trainer.seed)
        result = evaluate_policy(worker.generate, task, problems,
                                 EvalSettings(samples=args.samples, temperature=temperature,
                                              chunk=cfg.rollout.micro_batch_size, progress=cfg.trainer.progress))
    finally:
        close_rollout_worker(worker)
    bon = {}
    if prm_path:
        from tdrm_rl.evaluation.rerank import best_of_n, prm_scored_batch

        batch = prm_scored_batch(cfg, prm_path, task, problems, result, tokenizer)
        bon = best_of_n(batch, result.sampled_outcome, aggs)
    report = eval_report(cfg, args, source.checkpoint or policy_path, task, problems, temperature, result, bon,
                         prm_path, time.perf_counter() - t0)
    write_outputs(out, cfg, task, problems, result, report)
    print(eval_table(report) + f"\n\n-> {out}/eval.json, greedy.jsonl, samples.jsonl")
    return 0


def eval_report(cfg: RunConfig, args: argparse.Namespace, checkpoint: str, task: Any, problems: list,
                temperature: float, result: Any, bon: dict, prm_path: str | None, seconds: float) -> dict[str, Any]:
    """What eval.json holds: the numbers, and what they were measured on."""
    m = result.metrics
    sizes = sorted(int(k.split("@")[1]) for k in m if k.startswith("eval/pass@"))
    return {
        "checkpoint": os.path.abspath(checkpoint), "task": task.name, "problems": len(problems),
        "backend": cfg.rollout.backend, "samples": args.samples, "temperature": temperature,
        "max_new_tokens": cfg.rollout.max_new_tokens, "answer_extraction": cfg.data.answer_extraction,
        "greedy_accuracy": m["eval/greedy_accuracy"], "sampled_accuracy": m["eval/sampled_accuracy"],
        "pass@k": {str(k): m[f"eval/pass@{k}"] for k in sizes},
        "maj@k": {str(k): m[f"eval/maj@{k}"] for k in sizes},
        "prm": os.path.abspath(prm_path) if prm_path else None,
        "bon@k": {agg: {str(k): v for k, v in curve.items()} for agg, curve in bon.items()},
        "seconds": seconds,
        "command": command_line(args),
    }


def command_line(args: argparse.Namespace) -> str:
    """The `tdrm-rl eval` call that reproduces these numbers."""
    flags = [f"--samples={args.samples}"] + ([f"--temperature={args.temperature}"] if args.temperature is not None
                                             else []) + ([f"--problems={args.problems}"] if args.problems else [])
    flags += [f"--prm={args.prm}", f"--agg={args.agg}"] if args.prm else []
    return "tdrm-rl " + " ".join(shlex.quote(a) for a in ["eval", args.recipe, *args.overrides, *flags])


def eval_table(report: dict[str, Any]) -> str:
    """One screen: what was evaluated, greedy and sampled accuracy, then pass@k / maj@k (/ bon@k) per k."""
    from tdrm_rl.repro.tables import markdown_table

    head = (f"eval: {report['checkpoint']}\n{report['task']}, {report['problems']} held-out problems, "
            f"{report['backend']} backend, answers: {report['answer_extraction']}\n\n"
            f"greedy accuracy   {report['greedy_accuracy']:.3f}\n"
            f"sampled accuracy  {report['sampled_accuracy']:.3f}  (T={report['temperature']:g}, "
            f"{report['samples']} per problem)")
    ks = list(report["pass@k"])
    if not ks:
        return head
    aggs = list(report["bon@k"])
    rows = [[k, f"{report['pass@k'][k]:.3f}", f"{report['maj@k'][k]:.3f}"]
            + [f"{report['bon@k'][a][k]:.3f}" for a in aggs] for k in ks]
    return head + "\n\n" + markdown_table(["k", "pass@k", "maj@k"] + [f"PRM bon@k ({a})" for a in aggs], rows)


def write_outputs(out: str, cfg: RunConfig, task: Any, problems: list, result: Any, report: dict[str, Any]) -> None:
    """eval.json, and the greedy and sampled responses as rollouts files (one JSON line per trajectory)."""
    from tdrm_rl.data.rollout_file import write_jsonl
    from tdrm_rl.prm_tools.offline import to_trajectories

    os.makedirs(out, exist_ok=True)
    delim = cfg.data.step_delimiter
    write_jsonl(os.path.join(out, "greedy.jsonl"),
                to_trajectories(task, problems, result.greedy, 1, delim, outcome=result.greedy_outcome.tolist()))
    write_jsonl(os.path.join(out, "samples.jsonl"),
                to_trajectories(task, problems, result.sampled, report["samples"], delim,
                                outcome=result.sampled_outcome.flatten().tolist()))
    tmp = os.path.join(out, "eval.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, os.path.join(out, "eval.json"))
