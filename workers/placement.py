"""Where each role's ranks run: Ray placement groups built from the recipe's cluster layout.

Separate roles (cluster.colocate=false): one placement group per role, one bundle per rank
(whole GPUs on a GPU cluster: one per trainer rank, tensor_parallel_size per rollout engine).
With tensor parallelism each engine gets a group of its own, which vLLM's Ray executor fills
with its TP workers. Colocated roles (cluster.colocate=true): one group, bundle i holds rank i
of every role, and the roles split its GPU (fractional GPUs; vLLM sleeps while trainers run).
On CPU the same shapes are built from CPU shares, so the layout code runs in the CPU tests too.

`plan_layout` is pure (tested without Ray); `Placement` creates the groups and hands out the
actor options for each rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tdrm_rl.config import RunConfig

ROLES = ("rollout", "policy", "prm")
# Colocated GPU shares (sum to 1): the engine holds weights + KV cache, trainers sleep it while they run.
COLOCATED_GPU_SHARE = {"rollout": 0.4, "policy": 0.3, "prm": 0.3}
PLACEMENT_READY_TIMEOUT_S = 300.0


class PlacementError(RuntimeError):
    """The cluster cannot hold the recipe's layout; the message says what was asked and what exists."""


@dataclass
class RankSlot:
    group: str  # placement group name
    bundle: int
    num_cpus: float
    num_gpus: float
    capture_child_tasks: bool = False  # a TP engine's Ray workers land in its group


@dataclass
class Layout:
    strategy: str  # cluster.placement_strategy: every group's, unless `strategies` names another
    groups: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    slots: dict[str, list[RankSlot]] = field(default_factory=dict)
    strategies: dict[str, str] = field(default_factory=dict)

    def strategy_of(self, group: str) -> str:
        return self.strategies.get(group, self.strategy)

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for bundles in self.groups.values():
            for b in bundles:
                for k, v in b.items():
                    out[k] = out.get(k, 0.0) + v
        return out


def role_ranks(cfg: RunConfig) -> dict[str, int]:
    return {"rollout": cfg.rollout.num_workers, "policy": cfg.policy.world_size, "prm": cfg.prm.world_size}


def role_cpus(cfg: RunConfig) -> dict[str, float]:
    cc = cfg.cluster
    return {"rollout": cc.rollout_cpus, "policy": cc.policy_cpus, "prm": cc.prm_cpus}


def plan_layout(cfg: RunConfig) -> Layout:
    """Bundles per placement group and the slot of every rank of every role."""
    ranks, cpus, gpu = role_ranks(cfg), role_cpus(cfg), cfg.cluster.uses_gpu
    tp = cfg.rollout.tensor_parallel_size if gpu else 1
    layout = Layout(strategy=cfg.cluster.placement_strategy)
    if cfg.cluster.colocate:
        width = max(ranks.values())
        bundles: list[dict[str, float]] = []
        for i in range(width):
            present = [r for r in ROLES if i < ranks[r]]
            bundle = {"CPU": sum(cpus[r] for r in present)}
            if gpu:
                bundle["GPU"] = 1.0
            bundles.append(bundle)
        layout.groups["colocated"] = bundles
        for role in ROLES:
            share = COLOCATED_GPU_SHARE[role] if gpu else 0.0
            layout.slots[role] = [RankSlot("colocated", i, cpus[role], share) for i in range(ranks[role])]
        return layout
    for role in ("policy", "prm"):
        layout.groups[role] = [dict(CPU=cpus[role], **({"GPU": 1.0} if gpu else {})) for _ in range(ranks[role])]
        layout.slots[role] = [RankSlot(role, i, cpus[role], 1.0 if gpu else 0.0) for i in range(ranks[role])]
    if tp == 1:
        layout.groups["rollout"] = [dict(CPU=cpus["rollout"], **({"GPU": 1.0} if gpu else {}))
                                    for _ in range(ranks["rollout"])]
        layout.slots["rollout"] = [RankSlot("rollout", i, cpus["rollout"], 1.0 if gpu else 0.0)
                                   for i in range(ranks["rollout"])]
    else:
        # One group per engine: the actor sits in bundle 0 without a GPU; vLLM's TP workers take the GPUs.
        layout.slots["rollout"] = []
        for e in range(ranks["rollout"]):
            name = f"rollout-{e}"
            layout.groups[name] = [{"CPU": cpus["rollout"], "GPU": 1.0}] + [{"GPU": 1.0} for _ in range(tp - 1)]
            # An engine's TP ranks all-reduce in every layer: all on one node, never split by a soft PACK (F17).
            layout.strategies[name] = "STRICT_PACK"
            layout.slots["rollout"].append(RankSlot(name, 0, cpus["rollout"], 0.0, capture_child_tasks=True))
    return layout


class Placement:
    """Creates the layout's placement groups (checked against the cluster first) and gives actor options."""

    def __init__(self, cfg: RunConfig) -> None:
        import ray
        from ray.util.placement_group import placement_group

        self.layout = plan_layout(cfg)
        self.released: set[str] = set()
        have = ray.cluster_resources()
        for resource, need in self.layout.totals().items():
            if need > have.get(resource, 0.0) + 1e-9:
                raise PlacementError(f"cluster layout needs {need:g} {resource} in all (rollout.num_workers, "
                                     f"policy.world_size, prm.world_size, cluster.*_cpus, cluster.colocate) "
                                     f"but the Ray cluster has {have.get(resource, 0.0):g}")
        self.groups = {name: placement_group(bundles, strategy=self.layout.strategy_of(name), name="")
                       for name, bundles in self.layout.groups.items()}
        for name, pg in self.groups.items():
            try:
                ray.get(pg.ready(), timeout=PLACEMENT_READY_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                self.remove()
                raise PlacementError(f"placement group '{name}' {self.layout.groups[name]} "
                                     f"({self.layout.strategy_of(name)}) was not scheduled within "
                                     f"{PLACEMENT_READY_TIMEOUT_S:.0f} s; try cluster.placement_strategy=SPREAD "
                                     f"or fewer ranks per node") from None

    def options(self, role: str) -> list[dict[str, Any]]:
        """Ray actor options for each rank of `role`."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return [dict(num_cpus=s.num_cpus, num_gpus=s.num_gpus,
                     scheduling_strategy=PlacementGroupSchedulingStrategy(
                         placement_group=self.groups[s.group], placement_group_bundle_index=s.bundle,
                         placement_group_capture_child_tasks=s.capture_child_tasks))
                for s in self.layout.slots[role]]

    def release(self, role: str) -> None:
        """`role`'s actors are gone: remove the groups that no live role still uses."""
        self.released.add(role)
        live = {s.group for r, slots in self.layout.slots.items() if r not in self.released for s in slots}
        for name in [n for n in self.groups if n not in live]:
            self._remove(name)

    def remove(self) -> None:
        for name in list(self.groups):
            self._remove(name)

    def _remove(self, name: str) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.groups.pop(name))
