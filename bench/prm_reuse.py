"""One PRM forward per step (prm.reuse_values_forward) vs two, on one trainer, alternating step by step.

The driver decides whether the values pass keeps its graph for the TD update (tdrm_rl/rl/stages.py
`prm_keeps_values`), so flipping the driver's setting between steps compares the two on the same trainer, the
same machine load and the same policy drift; PRM-off steps (frozen, w_prm=0) beside them give what the PRM adds.
Core-seconds are each process's CPU time over the step (/proc/<pid>/stat: the rollout, policy and PRM actors and
the driver), so the PRM's share counts its work, not its wall time beside the policy update.
"""

from __future__ import annotations

import os
from typing import Any

from bench.common import Table, median
from bench.rl_step import BenchTrainer
from tdrm_rl.rl.schedule import PRMSchedule

MODES = {"two passes": {"prm.reuse_values_forward": False},
         "one pass (reuse)": {"prm.reuse_values_forward": True},
         "PRM off (frozen, w_prm=0)": {"prm.update": "frozen", "reward.w_prm": 0.0, "reward.w_rule": 1.0}}
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (every thread)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def set_mode(trainer: BenchTrainer, mode: str) -> None:
    base = {"prm.reuse_values_forward": True, "prm.update": "online", "reward.w_prm": 0.2, "reward.w_rule": 0.8}
    for key, value in {**base, **MODES[mode]}.items():
        section, name = key.split(".")
        setattr(getattr(trainer.cfg, section), name, value)
    trainer.schedule = PRMSchedule(trainer.cfg.prm)  # it reads prm.update once, when built


def run(trainer: BenchTrainer, quick: bool, trajectories: int, max_new_tokens: int) -> tuple[dict[str, Any], list]:
    reps = 2 if quick else 5
    trainer.set_shape(trajectories, max_new_tokens)
    pids = {role: group.run("pid") for role, group in
            (("rollout", trainer.rollout), ("policy", trainer.policy), ("prm", trainer.prm))}
    pids["driver"] = [os.getpid()]
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    counter = 3000
    for rep in range(reps + 1):  # round 0 warms every mode up, off the clock
        for mode in MODES:
            set_mode(trainer, mode)
            before = {role: sum(cpu_seconds(p) for p in ps) for role, ps in pids.items()}
            counter += 1
            metrics = trainer.step(counter)
            for role, ps in pids.items():
                metrics[f"core_s/{role}"] = sum(cpu_seconds(p) for p in ps) - before[role]
            if rep:
                runs[mode].append(metrics)
    set_mode(trainer, "one pass (reuse)")
    keys = ("timing_s/step", "timing_s/prm_values_and_logprobs", "timing_s/prm_values", "timing_s/prm_update",
            "timing_s/update", "prm/reused_values_forward", "response/length_mean",
            *(f"core_s/{r}" for r in pids))
    med = {m: {k: median([r.get(k, 0.0) for r in rs]) for k in keys} for m, rs in runs.items()}
    for m in med.values():
        m["core_s/total"] = sum(m[f"core_s/{r}"] for r in pids)
        m["prm_wall_share"] = (m["timing_s/prm_values_and_logprobs"] + m["timing_s/prm_update"]) / m["timing_s/step"]
        m["prm_core_share"] = m["core_s/prm"] / m["core_s/total"]
    two, one, off = (med[m] for m in MODES)
    rows = [("step wall s", "timing_s/step"), ("PRM values stage wall s", "timing_s/prm_values_and_logprobs"),
            ("  PRM values pass (in worker) s", "timing_s/prm_values"),
            ("PRM TD update (in worker) s", "timing_s/prm_update"), ("update stage wall s", "timing_s/update"),
            ("PRM values + TD update / step wall", "prm_wall_share"), ("PRM core-s", "core_s/prm"),
            ("step core-s (all actors + driver)", "core_s/total"), ("PRM share of core-s", "prm_core_share"),
            ("mean response tokens", "response/length_mean"), ("reused the values pass", "prm/reused_values_forward")]
    table = Table(f"One PRM forward per step vs two ({trajectories} trajectories, {reps} alternating steps each, "
                  "medians)", ["quantity", *MODES, "one / two"])
    for label, key in rows:
        ratio = one[key] / two[key] if two[key] else float("nan")
        table.add(label, two[key], one[key], off[key], ratio)
    prm_wall = {m: med[m]["timing_s/step"] - off["timing_s/step"] for m in ("two passes", "one pass (reuse)")}
    table.add("PRM's cost in step wall s (vs PRM off)", prm_wall["two passes"], prm_wall["one pass (reuse)"], "",
              prm_wall["one pass (reuse)"] / prm_wall["two passes"] if prm_wall["two passes"] else float("nan"))
    return {"trajectories": trajectories, "reps": reps, "medians": med, "steps": runs}, [table]
