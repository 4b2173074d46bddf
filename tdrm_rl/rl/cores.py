"""CPU cores and torch threads per stage: who computes beside whom decides how the cores are split.

On GPUs (or with an explicit `trainer.torch_threads`) nothing here changes a thread count.
"""

from __future__ import annotations

import os

import ray

from tdrm_rl.config import RunConfig


def cpu_cores() -> int:
    """Cores this node lends the run: Ray's CPU count, at most the machine's (read before actors reserve any)."""
    cores = int(ray.available_resources().get("CPU", os.cpu_count() or 1)) or 1
    return max(1, min(cores, os.cpu_count() or 1))


def thread_split(cfg: RunConfig, cores: int) -> tuple[int, int]:
    """Rollout runs alone, so it may use every core; policy and PRM train side by side, so they split them."""
    if cfg.trainer.torch_threads > 0:
        return cfg.trainer.torch_threads, cfg.trainer.torch_threads
    if cfg.trainer.async_rollout:  # rollout runs beside the trainers: it gets a trainer's share too
        return max(1, cores // 2), max(1, cores // 2)
    return cores, max(1, cores // 2)


def stage_threads(cfg: RunConfig, cores: int, trainers_at_once: int) -> int:
    """Torch threads for each trainer in a stage where `trainers_at_once` of them compute (0: keep the start value).

    On CPU a sync step leaves the rollout idle while the trainers work, so the trainers of a stage share
    every core: the PRM values pass, or a policy update with the PRM frozen, runs alone on all of them.
    Not under async rollout (generation runs beside), an explicit `trainer.torch_threads`, or on GPUs.
    """
    if cfg.trainer.torch_threads > 0 or cfg.trainer.async_rollout or cfg.cluster.uses_gpu:
        return 0
    return max(1, cores // max(1, trainers_at_once))


# The PRM's TD update runs alone on every core, before the policy update, once it took under this share of the
# policy update's time. Beside the policy each holds half the cores; if doubling a trainer's threads speeds it up s
# times, one after the other is faster when prm / policy < s - 1. `make bench` (section schedule) measured s ~ 1.7-1.8
# for the tiny recipe on 2 cores: the default PRM (~0.6-0.65) is at break-even (update stage 0.92x and 1.01x alone
# in two runs), prm.freeze_layers=3 (~0.2) gains (0.84x, 0.74x). 0.7 stays below the break-even.
PRM_ALONE_BELOW = 0.7


class CoreShare:
    """Sizes the torch threads of the worker groups that are about to compute together in one stage, and decides
    whether a short PRM TD update runs alone (`prm_update_alone`) instead of beside the policy update."""

    def __init__(self, cfg: RunConfig, cores: int) -> None:
        self.cfg = cfg
        self.cores = cores
        self.prm_to_policy: float | None = None  # the last update stage's in-worker PRM / policy update seconds

    def record_update(self, metrics: dict[str, float]) -> None:
        """Keep the update stage's PRM / policy time ratio (timing_s/prm_update / timing_s/policy_update)."""
        policy, prm = metrics.get("timing_s/policy_update"), metrics.get("timing_s/prm_update")
        if policy and prm:
            self.prm_to_policy = prm / policy

    def prm_update_alone(self) -> bool:
        """Where the update stage splits the cores (stage_threads), a PRM update measured short runs on all of them
        first, then the policy's: beside the policy it would leave its half idle once done."""
        return (self.cores > 1 and stage_threads(self.cfg, self.cores, 2) > 0 and self.prm_to_policy is not None
                and self.prm_to_policy < PRM_ALONE_BELOW)

    def stage(self, *groups) -> None:
        """`groups` (WorkerGroups) compute next, side by side: give their actors the cores between them."""
        threads = stage_threads(self.cfg, self.cores, sum(len(g.actors) for g in groups))
        if threads:
            for group in groups:
                group.submit("use_threads", threads)  # runs before the stage's calls: actors keep call order
