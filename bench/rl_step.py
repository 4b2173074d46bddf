"""One RL step of the tiny recipe, measured: stage breakdown, scaling, async speedup, padding, memory.

Every number comes from real steps of a real RLTrainer (Ray actors, DeepSpeed, HF generation). Batch
size and response length vary on the driver side between steps of the same trainer; the trainers'
DeepSpeed engines keep the gradient-accumulation count they were built with (2 micro-batches at the
recipe's 128 rows), so smaller batches are split into the same number of chunks.
"""

from __future__ import annotations

from typing import Any

import ray

from bench.common import Table, fit_exponent, median, timed
from tdrm_rl.data.batch import Batch
from tdrm_rl.config import RunConfig
from tdrm_rl.rl.trainer import RLTrainer
from tdrm_rl.workers.base import peak_rss_mb

GROUP = 8  # rollouts per prompt (the recipe's G)
STAGES = [  # (row label, metric key): the driver's stages, then the trainers' own clocks
    ("rollout (generate)", "timing_s/rollout"),
    ("verify + collate", "timing_s/verify"),
    ("PRM values (wall)", "timing_s/prm_values_and_logprobs"),
    ("advantages", "timing_s/advantages"),
    ("update stage (wall: policy || PRM)", "timing_s/update"),
    ("  policy update (in worker)", "timing_s/policy_update"),
    ("  PRM TD update (in worker)", "timing_s/prm_update"),
    ("weight sync", "timing_s/weight_sync"),
]


class BenchTrainer(RLTrainer):
    """RLTrainer whose batch size and response length the benchmark may change between steps."""

    def __init__(self, cfg: RunConfig, policy_path: str) -> None:
        super().__init__(cfg, policy_path)
        self.sampling: dict[str, Any] = {}
        self.last_batch: Batch | None = None

    def submit_generate(self, prompts, n, sampling):
        return super().submit_generate(prompts, n, {**self.sampling, **sampling})

    def make_batch(self, gen, problems, n):
        self.last_batch = super().make_batch(gen, problems, n)
        return self.last_batch

    def set_shape(self, trajectories: int, max_new_tokens: int, fixed_length: bool = False) -> None:
        """`fixed_length`: every response runs to max_new_tokens (no EOS stop), for the length scaling."""
        self.cfg.rollout.prompts_per_step = max(1, trajectories // self.cfg.rollout.group_size)
        self.sampling = {"max_new_tokens": max_new_tokens, "stop_at_eos": not fixed_length}

    def kill(self) -> None:
        if self.pending is not None:  # an async rollout still queued: let it end before the actors go
            ray.wait(self.pending[1], num_returns=len(self.pending[1]), timeout=600)
        for group in (self.rollout, self.policy, self.prm):
            group.kill()


def padding_fraction(batch: Batch, micro_batch_size: int) -> float:
    """Share of the token slots the PRM/policy forward passes compute on that are padding."""
    slots = real = 0
    for mb in batch.chunk(micro_batch_size):
        mb = mb.trim()
        slots += mb.attention_mask.numel()
        real += int(mb.attention_mask.sum())
    return 1.0 - real / max(slots, 1)


def measure(trainer: BenchTrainer, counter: list[int], trajectories: int, max_new_tokens: int,
            reps: int, fixed_length: bool = False) -> dict[str, Any]:
    """One warm-up step at this shape, then `reps` steps; per-key medians and a few extras."""
    trainer.set_shape(trajectories, max_new_tokens, fixed_length)
    runs = []
    for i in range(reps + 1):
        counter[0] += 1
        metrics = trainer.step(counter[0])
        if i:
            runs.append(metrics)
    keys = {k for m in runs for k, v in m.items() if isinstance(v, (int, float))}
    out = {k: median([m[k] for m in runs if k in m]) for k in keys}
    batch = trainer.last_batch
    out["trajectories"] = len(batch)
    out["max_new_tokens"] = max_new_tokens
    out["generated_tokens"] = out["response/length_mean"] * len(batch)
    out["padding_fraction_policy"] = padding_fraction(batch, trainer.cfg.policy.micro_batch_size)
    out["padding_fraction_prm"] = padding_fraction(batch, trainer.cfg.prm.micro_batch_size)
    trainer.cores.stage(trainer.prm, trainer.policy)  # as the driver runs it: beside the PRM values pass
    out["old_or_ref_logprobs_s"] = timed(lambda: trainer.policy.run_rank0("logprobs", batch))[0]
    return out


def breakdown_table(rows: list[dict[str, Any]]) -> Table:
    header = ["stage"] + [f"{r['trajectories']} traj: s (share)" for r in rows]
    table = Table("Stage breakdown of one RL step (tiny recipe, sync loop, PRM online)", header)
    for label, key in STAGES:
        table.add(label, *(f"{r.get(key, 0.0):.3f} ({100 * r.get(key, 0.0) / r['timing_s/step']:.0f}%)"
                           for r in rows))
    table.add("old/ref logprobs (1 fwd; not in this recipe's step)",
              *(f"{r['old_or_ref_logprobs_s']:.3f} ({100 * r['old_or_ref_logprobs_s'] / r['timing_s/step']:.0f}%)"
                for r in rows))
    table.add("step total (s)", *(f"{r['timing_s/step']:.3f}" for r in rows))
    table.add("trajectories/s", *(f"{r['trajectories'] / r['timing_s/step']:.1f}" for r in rows))
    table.add("generated tokens/s", *(f"{r['generated_tokens'] / r['timing_s/step']:.0f}" for r in rows))
    table.add("mean response tokens", *(f"{r['response/length_mean']:.1f}" for r in rows))
    table.add("padding share, policy fwd", *(f"{100 * r['padding_fraction_policy']:.0f}%" for r in rows))
    table.add("padding share, PRM fwd", *(f"{100 * r['padding_fraction_prm']:.0f}%" for r in rows))
    return table


def prm_share(r: dict[str, Any]) -> float:
    """PRM values + PRM TD update (its own time in the worker, though it overlaps the policy update)."""
    return (r.get("timing_s/prm_values_and_logprobs", 0.0) + r.get("timing_s/prm_update", 0.0)) / r["timing_s/step"]


def run_sync(trainer: BenchTrainer, quick: bool, max_new_tokens: int,
             prm_wall_share: float | None = None) -> tuple[dict[str, Any], list[Table]]:
    """`prm_wall_share`: what the PRM adds to the step's wall time (from the TRL comparison), shown beside
    the PRM share target, which counts the PRM's own worker time."""
    counter = [0]
    reps = 1 if quick else 2
    sizes = (16, 32, 64) if quick else (16, 32, 64, 128)
    rows = [measure(trainer, counter, n, max_new_tokens, reps) for n in sizes]
    lengths = (32, 64) if quick else (32, 64, 128)
    len_batch = 32 if quick else 64
    # The tiny policy ends most answers near 30 tokens: without EOS stops the length really varies.
    len_rows = [measure(trainer, counter, len_batch, t, reps, fixed_length=True) for t in lengths]
    steps = [r["timing_s/step"] for r in rows]
    batch_exp = fit_exponent([r["trajectories"] for r in rows], steps)
    len_exp = fit_exponent([r["response/length_mean"] for r in len_rows], [r["timing_s/step"] for r in len_rows])

    scaling = Table("Scaling of step time", ["varied", "value", "mean response tokens", "step s", "traj/s"])
    for r in rows:
        scaling.add("trajectories/step", r["trajectories"], r["response/length_mean"], r["timing_s/step"],
                    r["trajectories"] / r["timing_s/step"])
    for r in len_rows:
        scaling.add(f"max_new_tokens, no EOS stop ({len_batch} traj)", r["max_new_tokens"], r["response/length_mean"],
                    r["timing_s/step"], r["trajectories"] / r["timing_s/step"])
    scaling.add("fitted exponent: step ~ batch^k", "", "", batch_exp, "")
    scaling.add("fitted exponent: step ~ length^k", "", "", len_exp, "")

    ref = rows[-1]  # the largest batch: the recipe's 128 trajectories in a full run
    share, sync_share = prm_share(ref), ref["timing_s/weight_sync"] / ref["timing_s/step"]
    measured = (f"{100 * share:.0f}% at {ref['trajectories']} trajectories "
                f"(PRM TD update runs concurrently with the policy update; its worker time counted in full)")
    if prm_wall_share is not None:
        measured += f"; on the step's wall time the PRM adds {100 * prm_wall_share:.0f}% (TRL comparison steps)"
    targets = [
        {"target": "PRM values + TD update <= 20% of step time", "measured": measured, "met": share <= 0.20},
        {"target": "weight sync <= 5% of step time",
         "measured": f"{100 * sync_share:.1f}% at {ref['trajectories']} trajectories", "met": sync_share <= 0.05},
    ]
    data = {"breakdown": rows, "length_scaling": len_rows, "batch_exponent": batch_exp,
            "length_exponent": len_exp, "targets": targets}
    return data, [breakdown_table(rows), scaling]


ASYNC_TARGET = "async rollout >= 1.3x faster than sync"


def run_async(sync: BenchTrainer, async_: BenchTrainer, quick: bool, trajectories: int, max_new_tokens: int,
              blocks: tuple[int, int] | None = None, label: str = "") -> tuple[dict[str, Any], list[Table]]:
    """Blocks of steps, alternating sync / async trainers; the first step of each block is not timed.

    `blocks`: (rounds, timed steps per block), default (1, 2) quick and (2, 3) full; `label`: the model, for titles.
    """
    rounds, per_block = blocks or ((1, 2) if quick else (2, 3))
    same = async_ is sync
    if same and sync.cfg.trainer.torch_threads <= 0:
        raise ValueError("one trainer for both loops needs an explicit trainer.torch_threads (the thread split of "
                         "tdrm_rl/rl/cores.py depends on trainer.async_rollout otherwise)")
    counters = {id(sync): [1000], id(async_): [1000]}
    times: dict[str, list[float]] = {"sync": [], "async": []}
    stale: list[float] = []
    for t in (sync, async_):
        t.set_shape(trajectories, max_new_tokens)
    for _ in range(rounds):
        for name, trainer in (("sync", sync), ("async", async_)):
            if same:  # a driver-side setting, read at every step (tdrm_rl/rl/stages.py rollout_stage)
                trainer.cfg.trainer.async_rollout = name == "async"
                trainer.cfg.trainer.total_steps = 10**6
            c = counters[id(trainer)]
            for i in range(per_block + 1):
                c[0] += 1
                metrics = trainer.step(c[0])
                print(f"async bench: {name} step {i}: {metrics['timing_s/step']:.2f} s", flush=True)
                if i:
                    times[name].append(metrics["timing_s/step"])
                    if name == "async":
                        stale.append(metrics["rollout/staleness"])
            if trainer.pending is not None:  # the prefetched rollout must not run into the sync block
                ray.wait(trainer.pending[1], num_returns=len(trainer.pending[1]), timeout=600)
    sync_s, async_s = median(times["sync"]), median(times["async"])
    speedup = sync_s / async_s
    model = f"{label}, " if label else ""
    table = Table(f"One-step-off async rollout vs sync ({model}{trajectories} trajectories, alternating blocks)",
                  ["loop", "median step s", "trajectories/s", "steps timed", "max staleness"])
    table.add("sync", sync_s, trajectories / sync_s, len(times["sync"]), 0)
    table.add("async (one-step-off)", async_s, trajectories / async_s, len(times["async"]), max(stale))
    table.add("speedup", speedup, "", "", "")
    target = {"target": f"{model}{ASYNC_TARGET}", "measured": f"{speedup:.2f}x", "met": speedup >= 1.3}
    return ({"sync_step_s": sync_s, "async_step_s": async_s, "speedup": speedup, "step_times": times,
             "max_staleness": max(stale), "targets": [target]}, [table])


def run_memory(trainer: BenchTrainer) -> tuple[dict[str, Any], list[Table]]:
    roles = {"driver": peak_rss_mb(),
             "rollout": trainer.rollout.run_rank0("peak_rss_mb"),
             "policy": trainer.policy.run_rank0("peak_rss_mb"),
             "prm": trainer.prm.run_rank0("peak_rss_mb")}
    table = Table("Peak RSS per role (MiB, after the step benchmarks)", ["role", "peak RSS MiB"])
    for role, mb in roles.items():
        table.add(role, mb)
    return {"peak_rss_mb": roles}, [table]
