"""The offline PRM subcommands of `tdrm-rl`: rollouts, prm-train, bon, search, paper. Thin: parse, call
tdrm_rl.prm_tools.offline / tdrm_rl.repro.paper, print a table, write files."""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys

from tdrm_rl.config import RunConfig

class UsageError(ValueError):
    """A user mistake in the arguments of an offline subcommand; main prints it on one line."""


def _ints(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return vals


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def add_parsers(sub, recipe_command, prepare) -> None:
    """The offline subcommands on `sub` (recipe_command: tdrm_rl.cli.main's; `prepare(cfg)` resolves and checks
    the recipe's models before a handler runs)."""
    def command(name: str, handler, help: str, description: str):
        def prepared(args: argparse.Namespace, cfg: RunConfig) -> int:
            prepare(cfg)
            set_threads(cfg)
            return handler(args, cfg)

        return recipe_command(sub, name, prepared, help=help, description=description,
                              recipe_help="recipe YAML (model, data, rollout and prm sections are used)",
                              one_line_errors=(UsageError, ValueError))

    p = command("rollouts", cmd_rollouts, help="sample N solutions per problem, split into steps, verified (jsonl)",
                description="Sample N solutions per problem from the policy (model.policy_path, or the "
                            "embedded warm start), split each into steps, verify the answer, and write one JSON line "
                            "per trajectory. With --mc-samples K each non-final step prefix is completed K times: "
                            "the Monte-Carlo step labels a ScalarPRM trains on.")
    p.add_argument("--out", required=True, help="output .jsonl")
    p.add_argument("--problems", type=_positive, default=64, help="number of problems (default 64)")
    p.add_argument("-n", "--samples", type=_positive, default=4, help="solutions per problem (default 4)")
    p.add_argument("--split", choices=("train", "eval"), default="train", help="training or held-out problems")
    p.add_argument("--mc-samples", type=int, default=0, help="completions per step prefix for MC labels (0 = none)")

    p = command("prm-train", cmd_prm_train, help="train a PRM offline from a rollouts file (td, td_lambda, scalar, orm)",
                description="Train a PRM on a rollouts file with the same PRMWorker and TD code as online "
                            "RL. td: n-step targets (prm.n_step, prm.gamma; prm.bootstrap=ema for a target network); "
                            "td_lambda: lambda-returns (prm.gamma, prm.lam); scalar: BCE on Monte-Carlo step labels; "
                            "orm: BCE on the outcome at the final state; exact: BCE on the task's exact step labels (arith; a "
                            "diagnostic ceiling, not a method). Writes an HF checkpoint (OUT/prm), "
                            "metrics.jsonl and prm_train.json.")
    p.add_argument("--data", required=True, help="rollouts .jsonl from `tdrm-rl rollouts`")
    p.add_argument("--objective", required=True, choices=("td", "td_lambda", "scalar", "orm", "exact"),
                   help="exact: BCE on the task's exact step labels (arith only), the diagnostic ceiling")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--epochs", type=_positive, default=3)
    p.add_argument("--batch-size", type=_positive, default=64, help="trajectories per optimizer step")

    p = command("bon", cmd_bon, help="Best-of-N over a rollouts file with one or more PRMs",
                description="Score every solution with each PRM, aggregate its step values (last, min, "
                            "mean, product, final) and report Best-of-N accuracy for N = 1, 2, 4 ... N_max next to "
                            "majority vote and pass@N. Also the smoothness of each PRM and its mean |TD error| per "
                            "step; with exact step labels (arith) step AUC, within-problem pairwise accuracy and first-error "
                            "accuracy/F1 per PRM. The policy-log-prob verifier is a baseline row. Writes bon.json, bon.md, "
                            "bon.png and scores.jsonl (per trajectory and PRM: problem_id, outcome, values).")
    p.add_argument("--data", required=True, help="rollouts .jsonl (the same number of solutions per problem)")
    p.add_argument("--prm", action="append", default=[], metavar="NAME=PATH",
                   help="a PRM checkpoint (repeatable), e.g. --prm td=runs/td/prm")
    p.add_argument("--no-logprob-baseline", action="store_true",
                   help="leave out the policy-log-prob verifier row (logprob: exp of the lowest token log-prob so "
                   "far under the policy, model.policy_path or the embedded warm start; no training)")
    p.add_argument("--agg", default="last,min,mean,product,final", help="aggregations, comma-separated")
    p.add_argument("--out", required=True, help="output directory")

    p = command("search", cmd_search, help="PRM-guided step-level search (beam width x num_branch)",
                description="Beam search over reasoning steps: every live beam gets num_branch sampled next "
                            "steps (stop string = the step delimiter), the PRM scores each prefix (cached), the best "
                            "beam-width prefixes go on. Reports accuracy and generated tokens per num_branch.")
    p.add_argument("--prm", required=True, help="PRM checkpoint directory")
    p.add_argument("--problems", type=_positive, default=50, help="held-out problems (default 50)")
    p.add_argument("--beam-width", type=_positive, default=2, help="beams kept per step (1 = greedy)")
    p.add_argument("--num-branch", type=_ints, default=[2, 4, 8, 16], help="comma-separated (default 2,4,8,16)")
    p.add_argument("--max-depth", type=_positive, default=None, help="max steps (default data.num_ops + 2)")
    p.add_argument("--max-length", type=_positive, default=None, help="max response tokens (rollout.max_new_tokens)")
    p.add_argument("--step-max-tokens", type=_positive, default=32, help="max tokens per step")
    p.add_argument("--out", required=True, help="output directory")

    p = command("paper", cmd_paper, help="reproduce the TDRM paper's comparison on the embedded testbed",
                description="ScalarPRM vs TD-PRM vs TD(lambda) vs ORM on the same trajectories (Best-of-N, "
                            "step search, smoothness) and RL data efficiency (rule-only GRPO vs GRPO+TDRM), 3 seeds. "
                            "Writes REPORT_DIR/paper.md, paper.json and PNG figures. --quick: tiny sizes (tests).")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 seeds: a few minutes (tests)")
    p.add_argument("--report-dir", default=None,
                   help="where paper.md and the PNGs go (default reports; runs/paper-quick/report with --quick)")
    p.add_argument("--work-dir", default=None,
                   help="rollouts, checkpoints and RL runs (default runs/paper; runs/paper-quick with --quick)")


def set_threads(cfg: RunConfig) -> None:
    from tdrm_rl.models.load import set_cpu_defaults

    set_cpu_defaults(cfg.trainer.torch_threads)


def _policy(cfg: RunConfig) -> str:
    from tdrm_rl.models.sft import ensure_policy

    return ensure_policy(cfg, progress=cfg.trainer.progress)


def _read(path: str):
    from tdrm_rl.data.rollout_file import read_jsonl

    return read_jsonl(path)


def cmd_rollouts(args, cfg: RunConfig) -> int:
    import torch

    from tdrm_rl.prm_tools.offline import local_rollout_worker, sample_rollouts
    from tdrm_rl.data.rollout_file import write_jsonl
    from tdrm_rl.tasks.prompts import load_prompted_task

    if args.mc_samples < 0:
        raise UsageError(f"--mc-samples must be >= 0, got {args.mc_samples}")
    policy = _policy(cfg)
    task, _ = load_prompted_task(cfg, policy)  # train's prompts: chat template and system prompt where needed
    torch.manual_seed(cfg.trainer.seed)
    problems = (task.eval_problems(args.problems) if args.split == "eval"
                else task.sample_train(args.problems, random.Random(cfg.trainer.seed)))
    worker = local_rollout_worker(cfg, policy)
    records = sample_rollouts(cfg, worker, problems, args.samples, args.mc_samples, task=task)
    write_jsonl(args.out, records)
    acc = sum(r.outcome for r in records) / len(records)
    print(f"{len(records)} trajectories ({len(problems)} problems x {args.samples}), accuracy {acc:.3f}"
          + (f", MC labels from {args.mc_samples} completions per step" if args.mc_samples else "") + f" -> {args.out}")
    return 0


def cmd_prm_train(args, cfg: RunConfig) -> int:
    from tdrm_rl.prm_tools.offline import train_prm

    records = _read(args.data)
    if args.objective == "scalar" and any(r.mc_success is None for r in records):
        raise UsageError(f"{args.data} has no Monte-Carlo labels; write it with `tdrm-rl rollouts --mc-samples K`")
    init = cfg.model.prm_path or _policy(cfg)
    summary = train_prm(cfg, init, records, args.objective, args.out, epochs=args.epochs, batch_size=args.batch_size,
                        init_from_policy=cfg.model.prm_path is None, progress=cfg.trainer.progress)
    print(f"prm-train [{args.objective}]: {summary['optimizer_steps']} optimizer steps on {summary['trajectories']} "
          f"trajectories in {summary['seconds']:.0f}s -> {summary['checkpoint']}")
    return 0


def _prm_specs(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--prm {spec!r}: expected NAME=PATH")
        if not os.path.isdir(path):
            raise UsageError(f"--prm {name}: checkpoint directory not found: {path}")
        out[name] = path
    return out


def cmd_bon(args, cfg: RunConfig) -> int:
    from tdrm_rl.prm_tools.bon import BON_AGGREGATIONS
    from tdrm_rl.models.prm_info import PRM_INFO_FILE, read_prm_info
    from tdrm_rl.prm_tools.offline import (bon_eval, local_prm_worker, logprob_verifier_records, score_records,
                                 smoothness_eval, step_metrics_eval, write_scores_jsonl)
    from tdrm_rl.repro.tables import markdown_table, plot_lines
    from tdrm_rl.data.rollout_file import exact_step_labels
    from tdrm_rl.tasks import get_task

    aggs = [a.strip() for a in args.agg.split(",") if a.strip()]
    bad = [a for a in aggs if a not in BON_AGGREGATIONS]
    if bad or not aggs:
        raise UsageError(f"--agg: unknown aggregation(s) {bad}; known: {', '.join(BON_AGGREGATIONS)}")
    prms = _prm_specs(args.prm)
    if not prms and args.no_logprob_baseline:
        raise UsageError("bon: nothing to score; give --prm NAME=PATH or keep the log-prob baseline")
    records = _read(args.data)
    scored, smooth, discounts = {}, {}, {}
    if not args.no_logprob_baseline:
        scored["logprob"] = logprob_verifier_records(_policy(cfg), records, cfg.data.step_delimiter)
        discounts["logprob"] = 1.0
    for name, path in prms.items():
        worker = local_prm_worker(cfg, path, init_from_policy=False)
        scored[name] = score_records(worker, records, cfg.data.step_delimiter)
        info = read_prm_info(path)
        if "discount" not in info:  # a checkpoint from elsewhere, or an RL run older than tdrm_prm.json
            print(f"bon: {path} has no {PRM_INFO_FILE}; {name}'s values are read as undiscounted (discount 1)",
                  file=sys.stderr)
        discounts[name] = float(info.get("discount", 1.0))
    for name, batch in scored.items():
        smooth[name] = smoothness_eval(batch, cfg.prm.n_step, cfg.prm.gamma)
    any_batch = next(iter(scored.values()))
    labels = exact_step_labels(records, get_task(cfg.data), any_batch.step_mask)
    out = bon_eval(scored, records, aggs)
    out["smoothness"] = smooth
    out["step_metrics"] = step_metrics_eval(scored, records, labels, discounts, aggs)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bon.json"), "w") as f:
        json.dump(out, f, indent=2)
    write_scores_jsonl(os.path.join(args.out, "scores.jsonl"), scored, records, labels)
    rows = [[name] + [f"{v:.3f}" for v in accs] for name, accs in out["accuracy"].items()]
    table = markdown_table(["scorer"] + [f"N={n}" for n in out["N"]], rows)
    smooth_rows = [[n, f"{s['smoothness_per_step']:.4f}", f"{s['smoothness_per_token']:.4f}"] for n, s in smooth.items()]
    smooth_table = markdown_table(["PRM", "smoothness (d=1 per step)", "smoothness (d=step tokens)"], smooth_rows)
    step_table = step_metrics_table(out["step_metrics"], aggs)
    with open(os.path.join(args.out, "bon.md"), "w") as f:
        f.write(f"# Best-of-N on {args.data} ({out['problems']} problems)\n\n{table}\n\n{step_table}\n\n"
                f"{smooth_table}\n")
    plot_lines({k: (out["N"], v, None) for k, v in out["accuracy"].items()}, os.path.join(args.out, "bon.png"),
               "Best-of-N", "N", "accuracy", logx=True)
    print(table + "\n\n" + step_table + "\n\n" + smooth_table + f"\n\n-> {args.out}/bon.md, bon.json, bon.png, "
          "scores.jsonl")
    return 0


def step_metrics_table(step_metrics: dict, aggs: list[str]) -> str:
    """Markdown: per PRM, step AUC (overall and per step index), within-problem pairwise per aggregation,
    first-error accuracy / F1 (the rule is in the caption)."""
    from tdrm_rl.repro.tables import markdown_table

    def f(x):
        return "n/a" if x is None or x != x else f"{x:.3f}"

    prms = step_metrics["prms"]
    if not step_metrics["has_step_labels"]:
        return markdown_table(["PRM"] + [f"pairwise ({a})" for a in aggs],
                              [[n] + [f(m[f"pairwise/{a}"]) for a in aggs] for n, m in prms.items()])
    rows = []
    for name, m in prms.items():
        rows.append([name, f(m["step_auc"]), f(m["step_auc_undiscounted"]), " / ".join(f(x) for x in m["step_auc_by_index"])]
                    + [f(m[f"pairwise/{a}"]) for a in aggs]
                    + [f(m["first_error_acc"]), f(m["first_error_correct_acc"]), f(m["first_error_f1"])])
    head = (["PRM", "step AUC", "step AUC (undiscounted)", "step AUC by step"] + [f"pairwise ({a})" for a in aggs]
            + ["first-error acc", "error-free acc", "first-error F1"])
    return (markdown_table(head, rows) + "\n\nFirst error: " + step_metrics["first_error_rule"]
            + " (discount = the PRM's TD gamma, 1 for label-trained PRMs and the log-prob verifier).")


def cmd_search(args, cfg: RunConfig) -> int:
    import torch

    from tdrm_rl.prm_tools.offline import local_prm_worker, local_rollout_worker, search_eval
    from tdrm_rl.repro.tables import markdown_table
    from tdrm_rl.prm_tools.search import SearchSettings
    from tdrm_rl.tasks.prompts import load_prompted_task

    if not os.path.isdir(args.prm):
        raise UsageError(f"--prm: checkpoint directory not found: {args.prm}")
    policy = _policy(cfg)
    task, _ = load_prompted_task(cfg, policy)  # train's prompts: chat template and system prompt where needed
    problems = task.eval_problems(args.problems)
    rollout = local_rollout_worker(cfg, policy)
    prm = local_prm_worker(cfg, args.prm, init_from_policy=False)
    results = []
    for nb in args.num_branch:
        torch.manual_seed(cfg.trainer.seed)
        settings = SearchSettings(beam_width=args.beam_width, num_branch=nb,
                                  max_depth=args.max_depth or cfg.data.num_ops + 2,
                                  max_length=args.max_length or cfg.rollout.max_new_tokens,
                                  step_max_tokens=args.step_max_tokens, delimiter=cfg.data.step_delimiter,
                                  temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p)
        results.append(search_eval(cfg, rollout, prm, problems, settings, task=task))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "search.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = markdown_table(["num_branch", "accuracy", "tokens / problem", "PRM-scored prefixes", "cache hits"],
                           [[r["num_branch"], f"{r['accuracy']:.3f}", f"{r['tokens_per_problem']:.0f}",
                             r["prm_scored"], r["cache_hits"]] for r in results])
    with open(os.path.join(args.out, "search.md"), "w") as f:
        f.write(f"# Step search, beam width {args.beam_width}, {len(problems)} held-out problems\n\n{table}\n")
    print(table + f"\n\n-> {args.out}/search.md, search.json")
    return 0


def cmd_paper(args, cfg: RunConfig) -> int:
    from tdrm_rl.repro.paper import FULL, QUICK, run_paper

    command = "tdrm-rl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["paper"] else \
        "tdrm-rl paper " + " ".join(shlex.quote(a) for a in [args.recipe, *args.overrides] +
                                    (["--quick"] if args.quick else []))
    # The quick variant never overwrites the committed report.
    report_dir = args.report_dir or ("runs/paper-quick/report" if args.quick else "reports")
    work_dir = args.work_dir or ("runs/paper-quick" if args.quick else "runs/paper")
    run_paper(args.recipe, list(args.overrides), QUICK if args.quick else FULL, report_dir, work_dir,
              command=command, progress=cfg.trainer.progress)
    print(f"report: {os.path.join(report_dir, 'paper.md')}")
    return 0
