"""Two registries: advantage estimators and policy losses. A new one is a function plus a name:

    @register_adv_estimator("my_est", needs_groups=True)   # needs_groups: it compares a prompt's G samples
    def my_estimator(batch, token_rewards, cfg) -> EstimatorOutput: ...

    @register_policy_loss("my_loss")
    def my_loss(logprobs, old_logprobs, advantages, mask, **options) -> (loss, stats): ...
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

__all__ = ["ADV_ESTIMATORS", "POLICY_LOSSES", "register_adv_estimator", "get_adv_estimator",
           "estimator_needs_groups", "register_policy_loss", "get_policy_loss"]

ADV_ESTIMATORS: dict[str, Callable] = {}
GROUP_ESTIMATORS: set[str] = set()  # estimators that need rollout.group_size >= 2
POLICY_LOSSES: dict[str, Callable[..., tuple[Tensor, dict[str, Tensor]]]] = {}


def _register(registry: dict, kind: str, name: str) -> Callable:
    def decorator(fn: Callable) -> Callable:
        if name in registry and registry[name] is not fn:
            raise ValueError(f"{kind} {name!r} is already registered (by {registry[name].__qualname__}); pick another name")
        registry[name] = fn
        return fn

    return decorator


def _lookup(registry: dict, kind: str, name: str) -> Callable:
    if name not in registry:
        known = ", ".join(sorted(registry)) or "(none)"
        raise ValueError(f"unknown {kind} {name!r}; known: {known}")
    return registry[name]


def register_adv_estimator(name: str, needs_groups: bool = False) -> Callable:
    """Decorator: register an advantage estimator under `name` (`needs_groups`: it needs G >= 2 per prompt)."""
    if needs_groups:
        GROUP_ESTIMATORS.add(name)
    return _register(ADV_ESTIMATORS, "advantage estimator", name)


def estimator_needs_groups(name: str) -> bool:
    """Whether the estimator compares the samples of a prompt (so rollout.group_size must be >= 2)."""
    return name in GROUP_ESTIMATORS


def get_adv_estimator(name: str) -> Callable:
    """The advantage estimator registered as `name` (ValueError listing the known ones if none)."""
    return _lookup(ADV_ESTIMATORS, "advantage estimator", name)


def register_policy_loss(name: str) -> Callable:
    """Decorator: register a policy loss under `name`."""
    return _register(POLICY_LOSSES, "policy loss", name)


def get_policy_loss(name: str) -> Callable[..., tuple[Tensor, dict[str, Tensor]]]:
    """The policy loss registered as `name` (ValueError listing the known ones if none)."""
    return _lookup(POLICY_LOSSES, "policy loss", name)
