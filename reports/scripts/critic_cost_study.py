"""Cheaper critic updates and what they cost the PRM (issue 18, item 2): reports/prm_cost.md.

Each arm trains the default recipe (recipes/grpo_tdrm.yaml, the same SFT warm start and cached PRM warm-up) for
STEPS steps with one change to how the PRM is updated online, one arm after another on the same machine. Cost: the
PRM's in-worker TD update seconds and the step's wall seconds. Effect: the online step metrics, which the values
stage measures on each fresh batch with the arith task's exact step labels BEFORE the PRM trains on it (step AUC,
within-group ranking accuracy, first-error F1), averaged over the last half of the run, and the held-out greedy
accuracy at the end.

    .venv/bin/python reports/scripts/critic_cost_study.py [--steps 60] [--out /tmp/critic_cost]

About 3 minutes an arm on 2 cores (plus the SFT warm start and PRM warm-up once, when not cached).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

RECIPE = "recipes/grpo_tdrm.yaml"
ARMS = [  # name, overrides
    ("online (default)", []),
    ("freeze 2 of 4 layers", ["prm.freeze_layers=2"]),
    ("freeze 3 of 4 layers", ["prm.freeze_layers=3"]),
    ("backbone frozen (head + log-prob weight)", ["prm.backbone_lr=0"]),
    ("update every 2 steps", ["prm.update=every_k", "prm.update_every=2"]),
    ("frozen after warm-up", ["prm.update=frozen"]),
]
COST = [("timing_s/prm_update", "PRM TD update s (in worker, steps it ran)"), ("timing_s/update", "update stage s"),
        ("timing_s/step", "step s")]
EFFECT = [("prm/step_auc", "step AUC"), ("prm/ranking_accuracy", "ranking acc"),
          ("prm/first_error_f1", "first-error F1")]


def mean_of(rows: list[dict], key: str, only_positive: bool = False) -> float:
    values = [r[key] for r in rows if key in r and (not only_positive or r[key] > 0)]
    return statistics.fmean(values) if values else float("nan")


def cost_cell(value: float, base: float) -> str:
    """A cost and its ratio to the first arm's; "-" where either is missing (nan)."""
    return f"{value:.3f} ({value / base:.2f}x)" if base == base and value == value else "-"


def run_arm(out: str, steps: int, overrides: list[str]) -> str:
    if not os.path.exists(os.path.join(out, "summary.json")):
        cmd = [os.path.join(".venv", "bin", "tdrm-rl"), "train", RECIPE, f"trainer.total_steps={steps}",
               f"trainer.eval_every={steps}", "trainer.eval_sampled=false", "trainer.progress=false",
               f"trainer.output_dir={out}", *overrides]
        subprocess.run(cmd, check=True)
    return os.path.join(out, "metrics.jsonl")


def main() -> None:
    from tdrm_rl.rl.tracking import read_metrics

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default="/tmp/critic_cost")
    ap.add_argument("--report", default="reports/prm_cost.md")
    args = ap.parse_args()
    header = ["arm", "overrides"] + [h for _, h in COST] + [h for _, h in EFFECT] + ["held-out greedy (end)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base: dict[str, float] = {}
    for i, (name, overrides) in enumerate(ARMS):
        rows = read_metrics(run_arm(os.path.join(args.out, f"arm{i}"), args.steps, overrides))
        steps = [r for r in rows if "timing_s/step" in r]
        late = steps[len(steps) // 2:]
        evals = [r["eval/greedy_accuracy"] for r in rows if "eval/greedy_accuracy" in r]
        cells = [name, " ".join(overrides) or "-"]
        for key, _ in COST:  # cost over every step after the first (start-up)
            value = mean_of(steps[1:], key, only_positive=key == "timing_s/prm_update")
            base.setdefault(key, value)
            cells.append(cost_cell(value, base[key]))
        cells += [f"{mean_of(late, key):.3f}" for key, _ in EFFECT]
        cells.append(f"{evals[0]:.3f} -> {evals[-1]:.3f}" if evals else "-")
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    with open(args.report, "w") as f:
        f.write(TEMPLATE.format(steps=args.steps, half=args.steps // 2, table="\n".join(lines),
                                command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])))
    print(f"wrote {args.report}")


TEMPLATE = """# Cheaper critic updates: cost and effect (issue 18, item 2)

`.venv/bin/python reports/scripts/{command}` (`reports/scripts/critic_cost_study.py`): the default recipe, {steps} RL
steps an arm, one arm after another on this 2-core machine, the same SFT warm start and PRM warm-up. Cost: means over
steps 2-{steps} (the PRM update over the steps it ran), ratios to the default arm. Effect: the online step metrics,
measured by the values stage on each fresh batch with the arith task's exact step labels before the PRM trains on it,
means over the last {half} steps; held-out greedy accuracy (500 problems) at the warm start and at the end.

{table}

"""

if __name__ == "__main__":
    main()
