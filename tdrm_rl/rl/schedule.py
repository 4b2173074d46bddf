"""When the critic learns (`prm.update`), in one place.

    online         a TD update beside every policy update, on the batch the PRM just scored
    online_before  a TD update on the batch before the PRM scores it for the advantages (then it re-scores)
    every_k        a TD update beside the policy update of every `prm.update_every`-th step
    frozen         never (the PRM only scores; its TD loss is still reported)
"""

from __future__ import annotations

from tdrm_rl.config import PRMConfig


class PRMSchedule:
    def __init__(self, cfg: PRMConfig) -> None:
        self.mode = cfg.update
        self.every = cfg.update_every

    @property
    def before_advantages(self) -> bool:
        """The critic learns from this batch before it judges it."""
        return self.mode == "online_before"

    def with_policy_update(self, step: int) -> bool:
        """Whether the PRM's TD update runs alongside this step's policy update."""
        return self.mode == "online" or (self.mode == "every_k" and step % self.every == 0)
