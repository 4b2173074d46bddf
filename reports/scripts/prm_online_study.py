"""The online TD update against the same PRM frozen after warm-up (issue 14): reports/prm_online.md.

Each arm trains the default recipe (recipes/grpo_tdrm.yaml: the SFT warm start and the cached PRM warm-up of its
seed) for STEPS steps, one arm after another, for every seed. The arms differ only in the online update: frozen, or
online at a fraction of the warm-up's learning rates (prm.online_lr_scale). The effect is read from the online step
metrics, which the values stage measures on each fresh batch of TRAINING problems with the arith task's exact step
labels BEFORE the PRM trains on it: step AUC, within-group ranking accuracy and first-error F1, over the first ten
steps and over the last half of the run. Held-out greedy accuracy (500 problems) is reported at the end, never used
to choose.

    .venv/bin/python reports/scripts/prm_online_study.py [--steps 60] [--seeds 0 1] [--out /tmp/prm_online]

About 3 minutes an arm on 2 cores, plus one SFT warm start and one PRM warm-up per seed when not cached.
The runs of an --out folder that already finished are read, not run again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from critic_cost_study import EFFECT, mean_of, run_arm  # noqa: E402

ARMS = [  # name, overrides
    ("online, lr x1 (the default before this study)", ["prm.online_lr_scale=1.0"]),
    ("frozen after warm-up", ["prm.update=frozen"]),
    ("online, lr x0.3 (the default now)", ["prm.online_lr_scale=0.3"]),
    ("online, lr x0.1", ["prm.online_lr_scale=0.1"]),
    ("online, lr x0.03", ["prm.online_lr_scale=0.03"]),
]
FIRST = 10  # steps in the "first" window
TRAIN_REWARD = ("reward/rule_mean", "train reward")  # the policy's sampled accuracy on the step's training problems


def fmt(values: list[float]) -> str:
    """mean (and the spread over seeds when there are several)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} +- {statistics.stdev(values):.3f}"


def main() -> None:
    from tdrm_rl.rl.tracking import read_metrics

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default="/tmp/prm_online")
    ap.add_argument("--report", default="reports/prm_online.md")
    args = ap.parse_args()
    header = (["arm", "overrides"] + [f"{h}, steps 1-{FIRST}" for _, h in EFFECT[:1]]
              + [f"{h}, last {args.steps // 2}" for _, h in EFFECT + [TRAIN_REWARD]] + ["held-out greedy (start -> end)"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (name, overrides) in enumerate(ARMS):
        first, late, greedy = {k: [] for k, _ in EFFECT}, {k: [] for k, _ in EFFECT + [TRAIN_REWARD]}, []
        for seed in args.seeds:
            out = os.path.join(args.out, f"seed{seed}", f"arm{i}")
            rows = read_metrics(run_arm(out, args.steps, [f"trainer.seed={seed}", *overrides]))
            steps = [r for r in rows if "timing_s/step" in r]
            for key, _ in EFFECT:
                first[key].append(mean_of(steps[:FIRST], key))
            for key in late:
                late[key].append(mean_of(steps[len(steps) // 2:], key))
            evals = [r["eval/greedy_accuracy"] for r in rows if "eval/greedy_accuracy" in r]
            greedy.append(f"{evals[0]:.3f} -> {evals[-1]:.3f}" if evals else "-")
        key0 = EFFECT[0][0]
        cells = [name, " ".join(overrides) or "-", fmt(first[key0])] + [fmt(late[k]) for k in late]
        cells.append(", ".join(greedy))
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    with open(args.report, "w") as f:
        f.write(TEMPLATE.format(steps=args.steps, half=args.steps // 2, first=FIRST, table="\n".join(lines),
                                seeds=" ".join(map(str, args.seeds)),
                                command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])))
    print(f"wrote {args.report}")


TEMPLATE = """# The online TD update against the PRM frozen after warm-up (issue 14)

`.venv/bin/python reports/scripts/{command}` (`reports/scripts/prm_online_study.py`): the default recipe, {steps} RL
steps an arm, seeds {seeds} (trainer.seed: each its own PRM warm-up and RL streams; the SFT warm start has its own
sft.seed and is shared), one run after another on this 2-core machine. The online step metrics are measured by the values stage on each fresh batch of training problems with the
arith task's exact step labels, before the PRM trains on it: means over steps 1-{first} and over the last {half} steps,
mean +- std over seeds; the train reward is the policy's sampled accuracy on those batches. Held-out greedy accuracy
(500 problems) at the warm start and at the end, per seed, reported only: nothing was chosen by it.

{table}

"""

if __name__ == "__main__":
    main()
