"""The update stage's schedule: the PRM's TD update beside the policy update (half the cores each) vs alone on
every core just before it (tdrm_rl/rl/cores.py `CoreShare.prm_update_alone`), for the default PRM and a cheap one
(prm.freeze_layers=3), alternating step by step on one trainer each, so both schedules see the same load and drift.

The driver runs the PRM update alone once it measured under PRM_ALONE_BELOW of the policy update's time; the
table shows what each schedule costs on either side of that line and what the driver picks.
"""

from __future__ import annotations

from typing import Any, Callable

from bench.common import Table, median
from tdrm_rl.rl.cores import PRM_ALONE_BELOW

PRMS = {"default PRM": [], "prm.freeze_layers=3": ["prm.freeze_layers=3"]}
SCHEDULES = ("beside", "alone")
KEYS = ("timing_s/step", "timing_s/update", "timing_s/policy_update", "timing_s/prm_update")


def force(trainer: Any, schedule: str) -> None:
    """The next step's update stage runs `schedule` (the driver's measured ratio is replaced before each step)."""
    trainer.cores.prm_to_policy = 0.0 if schedule == "alone" else float("inf")


def run(build: Callable[..., Any], quick: bool, trajectories: int, max_new_tokens: int) -> tuple[dict[str, Any], list]:
    """`build(name, *overrides)`: a fresh BenchTrainer of the tiny recipe."""
    reps = 2 if quick else 4
    results: dict[str, Any] = {}
    for name, overrides in PRMS.items():
        trainer = build("schedule-" + str(len(results)), *overrides)
        try:
            trainer.set_shape(trajectories, max_new_tokens)
            runs: dict[str, list[dict[str, float]]] = {s: [] for s in SCHEDULES}
            counter = 5000
            for rep in range(reps + 1):  # round 0 warms both schedules up, off the clock
                for schedule in SCHEDULES:
                    force(trainer, schedule)
                    counter += 1
                    metrics = trainer.step(counter)
                    assert metrics["update/prm_alone"] == float(schedule == "alone")
                    if rep:
                        runs[schedule].append(metrics)
        finally:
            trainer.kill()
        med = {s: {k: median([r[k] for r in rs]) for k in KEYS} for s, rs in runs.items()}
        ratio = median([r["timing_s/prm_update"] / r["timing_s/policy_update"] for rs in runs.values() for r in rs])
        results[name] = {"medians": med, "prm_to_policy": ratio, "driver_picks": "alone" if ratio < PRM_ALONE_BELOW
                         else "beside", "steps": runs}
    table = Table(f"Update stage: PRM TD update beside the policy's vs alone just before it ({trajectories} "
                  f"trajectories, {reps} alternating steps each, medians)",
                  ["PRM", "PRM / policy update time", "driver picks", "update stage s: beside", "alone",
                   "alone / beside", "step s: beside", "alone", "alone / beside"])
    for name, r in results.items():
        b, a = r["medians"]["beside"], r["medians"]["alone"]
        table.add(name, r["prm_to_policy"], r["driver_picks"], b["timing_s/update"], a["timing_s/update"],
                  a["timing_s/update"] / b["timing_s/update"], b["timing_s/step"], a["timing_s/step"],
                  a["timing_s/step"] / b["timing_s/step"])
    return {"trajectories": trajectories, "reps": reps, "alone_below": PRM_ALONE_BELOW, "prms": results}, [table]
