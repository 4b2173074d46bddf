"""DAPO dynamic sampling: keep only groups whose verifiable rewards differ, refill from extra rounds.

A group whose responses all score the same gives zero group-relative advantage: it costs a policy
update and teaches nothing. The sampler keeps the informative groups of each rollout round until it
has `num_groups`, or until `max_extra_rounds` extra rounds are spent; then it tops the batch up with
dropped groups so the batch keeps its size (those carry zero GRPO/RLOO advantage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["informative_groups", "DynamicSampler"]


def informative_groups(group_rewards: Tensor) -> Tensor:
    """keep [n] bool: True for each group (a row of group_rewards [n, G]) whose rewards are not all equal."""
    return (group_rewards != group_rewards[:, :1]).any(dim=1)


@dataclass
class DynamicSampler:
    """Accumulates groups over rollout rounds. The driver loop:

        sampler = DynamicSampler(num_groups, max_extra_rounds)
        while sampler.needs_more():
            groups, rewards = rollout(sampler.missing())
            sampler.add_round(groups, rewards)
        batch_groups = sampler.result()
    """

    num_groups: int
    max_extra_rounds: int
    kept: list[Any] = field(default_factory=list)
    dropped: list[Any] = field(default_factory=list)
    rounds: int = 0

    def __post_init__(self) -> None:
        if self.num_groups < 1 or self.max_extra_rounds < 0:
            raise ValueError(f"DynamicSampler needs num_groups >= 1 and max_extra_rounds >= 0, "
                             f"got {self.num_groups} and {self.max_extra_rounds}")

    def missing(self) -> int:
        """How many more informative groups are needed."""
        return max(0, self.num_groups - len(self.kept))

    def needs_more(self) -> bool:
        """Another round is wanted: groups are missing and the round budget (1 + extra) is not spent."""
        return self.missing() > 0 and self.rounds <= self.max_extra_rounds

    def add_round(self, groups: list[Any], group_rewards: Tensor) -> None:
        """One round: groups[k] (any object) has verifiable rewards group_rewards[k] [G]."""
        if len(groups) != group_rewards.shape[0]:
            raise ValueError(f"add_round got {len(groups)} groups but {group_rewards.shape[0]} reward rows")
        self.rounds += 1
        for group, keep in zip(groups, informative_groups(group_rewards).tolist()):
            (self.kept if keep else self.dropped).append(group)

    def result(self) -> list[Any]:
        """num_groups groups: informative ones first (in arrival order), topped up with dropped ones."""
        out = self.kept[: self.num_groups]
        return out + self.dropped[: self.num_groups - len(out)]

    def stats(self) -> dict[str, float]:
        used = self.result()
        padded = sum(1 for g in used if any(g is d for d in self.dropped))
        return {"sampling/dropped_groups": float(len(self.dropped)), "sampling/rounds": float(self.rounds),
                "sampling/padded_groups": float(padded)}
