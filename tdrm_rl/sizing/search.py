"""The largest response length and micro-batches a layout holds, and the check `train` runs before Ray."""

from __future__ import annotations

import copy
import logging
import math

from tdrm_rl.config import ConfigError, RunConfig
from tdrm_rl.sizing.plan import Plan, build_plan
from tdrm_rl.sizing.shapes import ShapeError

# Keys the search varies, one at a time (the others as the recipe has them).
SEARCH_KEYS = ("rollout.max_new_tokens", "policy.micro_batch_size", "prm.micro_batch_size")


class PlanError(ConfigError):
    """The recipe's layout cannot hold its processes; the message says which GPU, by how much, and what would fit."""


def _with(cfg: RunConfig, key: str, value: int) -> RunConfig:
    section, name = key.split(".")
    out = copy.deepcopy(cfg)
    setattr(getattr(out, section), name, value)
    return out


def _upper_bound(plan: Plan, key: str) -> int:
    cfg = plan.cfg
    if key == "rollout.max_new_tokens":
        return max(plan.policy_shape.max_positions - plan.prompt_tokens, 1) if plan.policy_shape.max_positions \
            else 1 << 20
    world = cfg.policy.world_size if key.startswith("policy") else cfg.prm.world_size
    return max(1, math.ceil(cfg.rollout.prompts_per_step * cfg.rollout.group_size / world))


def largest_fitting(plan: Plan, key: str) -> int | None:
    """The largest value of `key` (up to what the recipe could use) at which the layout fits; None if even 1 does
    not. Memory grows with each of these keys, so a bisection finds it."""
    def fits(value: int) -> bool:
        return build_plan(_with(plan.cfg, key, value), plan.policy_shape, plan.prm_shape).fits

    lo, hi = 0, _upper_bound(plan, key)
    if fits(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo or None


def suggestions(plan: Plan) -> dict[str, int | None]:
    return {key: largest_fitting(plan, key) for key in SEARCH_KEYS}


def check_plan(cfg: RunConfig, source: str = "recipe") -> Plan | None:
    """`train`'s check before Ray: a GPU layout that cannot fit is a PlanError (one line) unless cluster.skip_plan.
    A CPU layout (no GPU in cluster.*) is not checked, nor (with a warning) a model the plan cannot size: an
    architecture it does not know, or no config.json anywhere yet (the model checks after it name the fix)."""
    if not cfg.cluster.uses_gpu or cfg.cluster.skip_plan:
        return None
    try:
        plan = build_plan(cfg)
    except ShapeError as e:
        logging.getLogger(__name__).warning(f"GPU memory not checked: {e}")
        return None
    if plan.fits:
        return plan
    fixes = ", ".join(f"{k}={v}" for k, v in suggestions(plan).items() if v is not None) or "none of " + \
        ", ".join(SEARCH_KEYS)
    raise PlanError(f"{source}: the layout does not fit: {plan.problems[0]}"
                    + (f" (and {len(plan.problems) - 1} more)" if len(plan.problems) > 1 else "")
                    + f"; largest that fit, one at a time: {fixes}; `tdrm-rl plan` prints the table; "
                    f"cluster.skip_plan=true starts anyway")
