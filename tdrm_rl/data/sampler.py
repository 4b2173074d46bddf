"""Which training problems each step sees, as resumable state.

With a finite train set the sampler walks a seeded shuffle of it, one epoch after another; its
state is (epoch, position), so a resumed run continues exactly where the checkpoint stopped —
at an epoch boundary that is the start of the next epoch, never an empty epoch. Without a
finite set (arith, data.train_size=0) it draws fresh problems from a seeded stream whose
random state is the sampler state.
"""

from __future__ import annotations

import random
from typing import Any, Optional


class TrainSampler:
    def __init__(self, task: Any, train_size: int, seed: int) -> None:
        self.task = task
        self.seed = seed
        self.pool: Optional[list] = task.train_set(train_size)
        self.rng = random.Random(seed)  # the endless stream (and nothing else)
        self.epoch, self.pos = 0, 0
        self._cached: tuple[int, list[int]] = (-1, [])

    def _order(self, epoch: int) -> list[int]:
        if self._cached[0] != epoch:
            order = list(range(len(self.pool)))
            random.Random(f"train-order-{self.seed}-{epoch}").shuffle(order)
            self._cached = (epoch, order)
        return self._cached[1]

    def next(self, n: int) -> list:
        """The next `n` problems; a batch that crosses an epoch boundary takes the rest of this epoch first."""
        if self.pool is None:
            return self.task.sample_train(n, self.rng)
        out = []
        while len(out) < n:
            if self.pos == len(self.pool):
                self.epoch, self.pos = self.epoch + 1, 0
            take = min(n - len(out), len(self.pool) - self.pos)
            order = self._order(self.epoch)
            out += [self.pool[i] for i in order[self.pos:self.pos + take]]
            self.pos += take
        return out

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"epoch": self.epoch, "pos": self.pos, "size": None if self.pool is None else len(self.pool),
                "rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = None if self.pool is None else len(self.pool)
        if state.get("size") != size:
            raise ValueError(f"checkpoint sampler saw a train set of {state.get('size')} problems, this run has "
                             f"{size}: data.train_size or the data file changed")
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
