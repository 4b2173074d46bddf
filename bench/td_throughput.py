"""TD-target throughput: transitions/s for 10^6 transitions, n-step and TD(lambda)."""

from __future__ import annotations

from typing import Any

import torch

from bench.common import Table, median, timed
from tdrm_rl.algos.td import lambda_targets, nstep_targets

TRANSITIONS = 10**6


def run(quick: bool) -> tuple[dict[str, Any], list[Table]]:
    steps = 16
    rows = TRANSITIONS // steps  # every row has `steps` real transitions: exactly 10^6
    gen = torch.Generator().manual_seed(0)
    values = torch.rand((rows, steps), generator=gen)
    mask = torch.ones((rows, steps), dtype=torch.bool)
    outcome = torch.randint(0, 2, (rows,), generator=gen).float()
    reps = 2 if quick else 5
    cases = {"n-step (n=2)": lambda: nstep_targets(values, None, mask, outcome, 2, 0.8),
             "n-step (n=4)": lambda: nstep_targets(values, None, mask, outcome, 4, 0.8),
             "TD(lambda=0.7)": lambda: lambda_targets(values, None, mask, outcome, 0.8, 0.7)}
    table = Table(f"TD targets over {TRANSITIONS:.0e} transitions ({rows} trajectories x {steps} steps)",
                  ["mode", "seconds", "transitions/s"])
    out = []
    for name, fn in cases.items():
        fn()
        seconds = median([timed(fn)[0] for _ in range(reps)])
        out.append({"mode": name, "seconds": seconds, "transitions_per_s": TRANSITIONS / seconds})
        table.add(name, seconds, TRANSITIONS / seconds)
    return {"transitions": TRANSITIONS, "rows": out}, [table]
