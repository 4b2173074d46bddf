"""Cheaper ONLINE PRM updates from the same warm PRM (issues 18 and 14): reports/prm_online_cost.md.

reports/prm_cost.md measured prm.freeze_layers and prm.backbone_lr=0 as recipe changes, which also changed the PRM
warm-up (both are in its cache key), so each arm started RL from another warm PRM. Here every arm starts RL from the
SAME warm PRM of its seed (model.prm_path = the default recipe's cached warm-up) and only the online updates
differ: the default (every parameter, prm.online_lr_scale of the warm-up's rates), the backbone fixed (value head
and log-prob weight only), the lowest 3 of 4 layers fixed, and no update at all. Cost: the PRM's in-worker values
and TD-update seconds, the update stage and the step. Effect: the online step metrics that the values stage
measures on each fresh batch of TRAINING problems with the arith task's exact step labels before the PRM trains on
it, over the last half of the run, mean +- std over seeds. Held-out greedy (500 problems) at the end: reported only.

    .venv/bin/python reports/scripts/online_update_cost_study.py [--steps 60] [--seeds 0 1] [--out /tmp/online_cost]

About 3 minutes an arm on 2 cores, when the SFT warm start and the PRM warm-ups are cached.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from critic_cost_study import EFFECT, RECIPE, cost_cell, mean_of, run_arm  # noqa: E402
from prm_online_study import fmt  # noqa: E402

ARMS = [  # name, overrides on top of model.prm_path=<the seed's warm PRM>
    ("online, every parameter (default)", []),
    ("online, backbone fixed (head + log-prob weight)", ["prm.backbone_lr=0"]),
    ("online, lowest 3 of 4 layers fixed", ["prm.freeze_layers=3"]),
    ("frozen after warm-up", ["prm.update=frozen"]),
]
COST = [("timing_s/prm_values", "PRM values s"), ("timing_s/prm_update", "PRM TD update s (in worker)"),
        ("timing_s/update", "update stage s"), ("timing_s/step", "step s")]


def warm_prm(seed: int) -> str:
    """The default recipe's warm PRM for this seed (built once and cached, as `tdrm-rl train` does)."""
    from tdrm_rl.config import load_config
    from tdrm_rl.models.sft import ensure_policy
    from tdrm_rl.prm_tools.warmup import ensure_prm

    cfg = load_config(RECIPE, [f"trainer.seed={seed}"])
    return ensure_prm(cfg, ensure_policy(cfg, progress=False), progress=False)


def main() -> None:
    from tdrm_rl.rl.tracking import read_metrics

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default="/tmp/online_cost")
    ap.add_argument("--report", default="reports/prm_online_cost.md")
    args = ap.parse_args()
    warm = {seed: warm_prm(seed) for seed in args.seeds}
    header = ["arm", "overrides"] + [h for _, h in COST] + [h for _, h in EFFECT] + ["held-out greedy (start -> end)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base: dict[str, float] = {}
    for i, (name, overrides) in enumerate(ARMS):
        cost, effect, greedy = {k: [] for k, _ in COST}, {k: [] for k, _ in EFFECT}, []
        for seed in args.seeds:
            out = os.path.join(args.out, f"seed{seed}", f"arm{i}")
            rows = read_metrics(run_arm(out, args.steps, [f"trainer.seed={seed}", f"model.prm_path={warm[seed]}",
                                                          *overrides]))
            steps = [r for r in rows if "timing_s/step" in r]
            for key in cost:  # every step after the first (start-up); the update over the steps it ran
                cost[key].append(mean_of(steps[1:], key, only_positive=key == "timing_s/prm_update"))
            for key in effect:
                effect[key].append(mean_of(steps[len(steps) // 2:], key))
            evals = [r["eval/greedy_accuracy"] for r in rows if "eval/greedy_accuracy" in r]
            greedy.append(f"{evals[0]:.3f} -> {evals[-1]:.3f}" if evals else "-")
        cells = [name, " ".join(overrides) or "-"]
        for key, _ in COST:
            values = [v for v in cost[key] if v == v]
            value = statistics.fmean(values) if values else float("nan")
            base.setdefault(key, value)
            cells.append(cost_cell(value, base[key]))
        cells += [fmt(effect[k]) for k, _ in EFFECT] + [", ".join(greedy)]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    with open(args.report, "w") as f:
        f.write(TEMPLATE.format(steps=args.steps, half=args.steps // 2, seeds=" ".join(map(str, args.seeds)),
                                table="\n".join(lines),
                                command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])))
    print(f"wrote {args.report}")


TEMPLATE = """# Cheaper online PRM updates from the same warm PRM (issues 18 and 14)

`.venv/bin/python reports/scripts/{command}` (`reports/scripts/online_update_cost_study.py`): the default recipe,
{steps} RL steps an arm, seeds {seeds}, every arm starting from its seed's cached default warm PRM
(model.prm_path), one run after another on this 2-core machine. Cost: means over steps 2-{steps} and the seeds
(the TD update over the steps it ran), ratios to the first arm. Effect: the online step metrics on each fresh batch
of training problems (exact step labels, before the PRM trains on it), last {half} steps, mean +- std over seeds.
Held-out greedy accuracy (500 problems), per seed: reported only, nothing was chosen by it.

{table}

"""

if __name__ == "__main__":
    main()
