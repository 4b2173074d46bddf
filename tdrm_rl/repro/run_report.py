"""A markdown report of one finished `tdrm-rl train` run: held-out accuracy before and after, the curve PNG, the
step-time breakdown and what the PRM did, all read from the run folder (metrics.jsonl, summary.json, command.json).

    python -m tdrm_rl.repro.run_report RUN_DIR --out reports/smollm2.md [--title ...] [--command "make smollm2"]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from typing import Any, Optional

from tdrm_rl.repro.tables import markdown_table, mean_std
from tdrm_rl.rl.metrics import STAGES
from tdrm_rl.rl.tracking import plot_curves, read_metrics, read_run_command

# What the workers time inside the driver's stages (the stage names come from rl/metrics.STAGES).
WORKER_TIMINGS = ("rollout_generate", "rollout_load_weights", "prm_values", "policy_update", "prm_update")
# Training-side numbers compared over the first and the last steps of the run.
TREND_KEYS = (("reward/rule_mean", "train accuracy (sampled, rule reward)"),
              ("prm/ranking_accuracy", "PRM within-group ranking accuracy"),
              ("prm/td_loss", "PRM TD loss"), ("prm/td_error", "PRM TD error"),
              ("prm/final_value_brier", "PRM final-value Brier score"),
              ("response/length_mean", "response length (tokens)"),
              ("policy/entropy", "policy entropy"))
WINDOW = 10


def _mean(xs: list[Optional[float]]) -> Optional[float]:
    """Mean of the finite values (tables.mean_std), None when there are none."""
    m = mean_std(xs)[0]
    return None if math.isnan(m) else m


def _fmt(v: Optional[float], digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def accuracy_section(evals: list[dict[str, Any]], n: int) -> tuple[str, dict[str, float]]:
    """Held-out greedy accuracy at every evaluation, and before vs after (the mean of the last two evaluations,
    as the run summary reports it) with its binomial standard error."""
    rows = [[str(e["step"]), _fmt(e["eval/greedy_accuracy"]), _fmt(e.get("eval/sampled_accuracy"))] for e in evals]
    before = evals[0]["eval/greedy_accuracy"]
    last = evals[-2:] if len(evals) > 2 else evals[-1:]
    after = sum(e["eval/greedy_accuracy"] for e in last) / len(last)
    se = math.sqrt(max(before * (1 - before), 1e-12) / n)
    numbers = {"before": before, "after": after, "gain_points": 100 * (after - before), "se_points": 100 * se}
    text = "\n".join([
        markdown_table(["RL step", "held-out greedy", "held-out sampled"], rows), "",
        f"- Before RL: **{100 * before:.1f}%** greedy on {n} held-out problems; after RL (mean of the last "
        f"{len(last)} evaluations): **{100 * after:.1f}%**, a change of **{numbers['gain_points']:+.1f} points** "
        f"(one binomial standard error at the start: {numbers['se_points']:.1f} points).",
    ])
    return text, numbers


def timing_section(rows: list[dict[str, Any]]) -> str:
    """Mean seconds per RL step of each driver stage and of the work timed inside the workers."""
    steps = [r for r in rows if "timing_s/step" in r]
    step_s = _mean([r["timing_s/step"] for r in steps]) or float("nan")
    table = []
    for name in ("step",) + STAGES:
        v = _mean([r.get(f"timing_s/{name}") for r in steps])
        if v is not None:
            table.append([f"`{name}`" + (" (driver stage)" if name != "step" else " (wall)"), f"{v:.1f}",
                          f"{100 * v / step_s:.0f}%"])
    for name in WORKER_TIMINGS:
        v = _mean([r.get(f"timing_s/{name}") for r in steps])
        if v is not None:
            table.append([f"`{name}` (inside a worker)", f"{v:.1f}", f"{100 * v / step_s:.0f}%"])
    note = ("Driver stages add up to the step; worker timings sit inside them (the policy and PRM updates run side "
            "by side inside `update`, so their shares can add up to more than the stage's).")
    return markdown_table(["stage", "mean s / step", "share of step"], table) + "\n\n" + note


def trend_section(rows: list[dict[str, Any]]) -> str:
    steps = [r for r in rows if "timing_s/step" in r]
    k = min(WINDOW, max(len(steps) // 2, 1))
    table = []
    for key, label in TREND_KEYS:
        cells = []
        for window in (steps[:k], steps[-k:]):
            vals = [r.get(key) for r in window]
            seen = sum(v is not None for v in vals)
            # A metric can be undefined at a step (ranking accuracy needs a group with right and wrong answers).
            cells.append(_fmt(_mean(vals)) + ("" if seen == len(vals) else f" ({seen} of {len(vals)} steps)"))
        if any(r.get(key) is not None for r in steps):
            table.append([label, f"`{key}`", *cells])
    return markdown_table(["quantity", "metric", f"first {k} steps", f"last {k} steps"], table) + (
        "\n\nA step without `prm/ranking_accuracy` had no group with both right and wrong answers: GRPO's "
        "advantages are then zero for its rule reward.")


def run_command(ran: dict[str, Any]) -> str:
    """The run's command line as a user would type it, from command.json."""
    if not ran:
        return "unknown (no command.json)"
    return " ".join(["tdrm-rl", ran.get("command", "train"), ran.get("recipe") or "", *ran.get("overrides", [])])


def build_report(run_dir: str, out: str, title: str, command: str) -> dict[str, Any]:
    """Write the report to `out` (and the curves PNG beside it); return the headline numbers."""
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(metrics_path):
        raise FileNotFoundError(f"{run_dir!r} has no metrics.jsonl: not a tdrm-rl run folder")
    rows = read_metrics(metrics_path)
    evals = [r for r in rows if "eval/greedy_accuracy" in r]
    if len(evals) < 2:
        raise ValueError(f"{metrics_path}: {len(evals)} held-out evaluation(s); a report needs one before and one "
                         "after RL")
    summary_path = os.path.join(run_dir, "summary.json")
    summary = json.load(open(summary_path)) if os.path.isfile(summary_path) else {}
    ran = read_run_command(run_dir) or {}
    n = int(summary.get("eval_problems") or 0)
    accuracy, numbers = accuracy_section(evals, n)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    png = os.path.splitext(out)[0] + "_curves.png"
    plot_curves(rows, png)
    steps = [r for r in rows if "timing_s/step" in r]
    rl_s = summary.get("rl_seconds")
    lines = [
        f"# {title}", "",
        f"Generated by `{command}` on {datetime.date.today().isoformat()} from the run folder `{run_dir}` "
        "(`python -m tdrm_rl.repro.run_report` writes this file; do not edit it by hand).", "",
        f"- Command of the run: `{run_command(ran)}`",
        f"- {len(steps)} RL steps" + (f", {rl_s / 60:.1f} min of RL wall time (evaluations included)"
                                       if rl_s else "") + ".", "",
        "## Held-out accuracy", "", accuracy, "", f"![curves]({os.path.basename(png)})", "",
        "## Where a step's time goes", "", timing_section(rows), "",
        "## What the PRM and the policy did", "", trend_section(rows), "",
    ]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    return numbers | {"report": out, "plot": png, "steps": len(steps)}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a finished run folder (trainer.output_dir)")
    ap.add_argument("--out", required=True, help="the markdown file to write (the PNG goes beside it)")
    ap.add_argument("--title", default="A tdrm-rl run")
    ap.add_argument("--command", default="python -m tdrm_rl.repro.run_report",
                    help="the command that regenerates the report, printed at its top")
    args = ap.parse_args(argv)
    try:
        numbers = build_report(args.run_dir, args.out, args.title, args.command)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: greedy {100 * numbers['before']:.1f}% -> {100 * numbers['after']:.1f}% "
          f"({numbers['gain_points']:+.1f} points), plot {numbers['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
