"""Advantage estimators, policy losses and masked reductions (verl-style registries).

A new estimator or loss is a function plus a name:

    @register_adv_estimator("my_est")
    def my_advantages(rewards, group_ids, ...): ...

    get_adv_estimator("my_est")(rewards, group_ids)

Shapes: B = batch (one row per response), L = token positions, `mask [B, L]` marks the tokens
that count (usually the response tokens).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "ADV_ESTIMATORS",
    "POLICY_LOSSES",
    "register_adv_estimator",
    "get_adv_estimator",
    "register_policy_loss",
    "get_policy_loss",
    "masked_sum",
    "masked_mean",
    "group_zscore",
    "grpo_advantages",
    "ppo_clip_loss",
    "kl_penalty",
    "broadcast_sequence_advantages",
]

ADV_ESTIMATORS: dict[str, Callable[..., Tensor]] = {}
POLICY_LOSSES: dict[str, Callable[..., tuple[Tensor, dict[str, Tensor]]]] = {}

# exp() of a log-ratio beyond this is numerically meaningless; bound it so one bad token cannot
# turn the whole loss into inf/NaN.
_MAX_LOG_RATIO = 20.0


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


def register_adv_estimator(name: str) -> Callable:
    """Decorator: register an advantage estimator under `name`."""
    return _register(ADV_ESTIMATORS, "advantage estimator", name)


def get_adv_estimator(name: str) -> Callable[..., Tensor]:
    """The advantage estimator registered as `name` (ValueError listing the known ones if none)."""
    return _lookup(ADV_ESTIMATORS, "advantage estimator", name)


def register_policy_loss(name: str) -> Callable:
    """Decorator: register a policy loss under `name`."""
    return _register(POLICY_LOSSES, "policy loss", name)


def get_policy_loss(name: str) -> Callable[..., tuple[Tensor, dict[str, Tensor]]]:
    """The policy loss registered as `name` (ValueError listing the known ones if none)."""
    return _lookup(POLICY_LOSSES, "policy loss", name)


# ---------------------------------------------------------------------------------------------
# masked reductions
# ---------------------------------------------------------------------------------------------


def masked_sum(x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """sum(x * mask) over `dim` (all dims if None). Masked entries of x may hold anything, even NaN."""
    x = torch.where(mask != 0, x, torch.zeros_like(x)) * mask.to(x.dtype)
    return x.sum() if dim is None else x.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """sum(x * mask) / sum(mask) over `dim` (all dims if None); 0 where the mask is empty."""
    total = mask.to(x.dtype).sum() if dim is None else mask.to(x.dtype).sum(dim=dim)
    return masked_sum(x, mask, dim) / total.clamp(min=1e-8)


# ---------------------------------------------------------------------------------------------
# advantage estimators
# ---------------------------------------------------------------------------------------------


def group_zscore(x: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """Z-score of each element within its group:  (x - mean_G) / (std_G + eps).

    std_G is the population std (divide by |G|, not |G| - 1): a group of two responses with
    rewards 0 and 1 gives advantages -1 and +1 (up to eps). A group whose values are all equal
    (including a group of one) gives exactly 0. Groups may be non-contiguous and their ids any
    integers.

    x [B] float, group_ids [B] long -> z [B].
    """
    if not x.is_floating_point():
        x = x.float()
    _, group = torch.unique(group_ids, return_inverse=True)  # [B] in 0..G-1
    G = int(group.max().item()) + 1 if group.numel() else 0
    zeros = torch.zeros(G, dtype=x.dtype, device=x.device)

    count = zeros.index_add(0, group, torch.ones_like(x))  # [G]
    mean = zeros.index_add(0, group, x) / count  # [G]
    centered = x - mean[group]  # [B]
    std = (zeros.index_add(0, group, centered**2) / count).sqrt()  # [G]

    # Rounding in the mean can leave ~1e-17 residues; a constant group must give exactly 0.
    g_max = zeros.scatter_reduce(0, group, x, reduce="amax", include_self=False)
    g_min = zeros.scatter_reduce(0, group, x, reduce="amin", include_self=False)
    constant = (g_max == g_min)[group]  # [B]

    z = centered / (std[group] + eps)
    return torch.where(constant, torch.zeros_like(z), z)


@register_adv_estimator("grpo")
def grpo_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO outcome advantage, one scalar per response:

        A_j = (R_j - mean_{G(j)} R) / (std_{G(j)} R + eps)

    with the population std (see `group_zscore`). rewards [B], group_ids [B] long -> adv [B].
    """
    return group_zscore(rewards, group_ids, eps)


@register_adv_estimator("drgrpo")
def drgrpo_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO without the std division (Dr. GRPO, Liu et al. 2025):  A_j = R_j - mean_{G(j)} R.

    Dividing by std_G turns tiny reward differences inside a group (e.g. only the PRM term varies
    because every answer is right) into full-size advantages; centring alone keeps them small.
    `eps` is unused and kept for a uniform estimator signature.
    """
    return rewards.float() - _group_mean(rewards.float(), group_ids)


def _group_mean(x: Tensor, group_ids: Tensor) -> Tensor:
    """mean_{G(j)} x for every element j.  x [B], group_ids [B] -> [B]."""
    _, group = torch.unique(group_ids, return_inverse=True)
    zeros = torch.zeros(int(group.max().item()) + 1 if group.numel() else 0, dtype=x.dtype, device=x.device)
    count = zeros.index_add(0, group, torch.ones_like(x))
    return (zeros.index_add(0, group, x) / count)[group]


def broadcast_sequence_advantages(adv: Tensor, response_mask: Tensor) -> Tensor:
    """Put a per-response advantage on every response token: A[b, t] = adv[b] * response_mask[b, t].

    adv [B], response_mask [B, L] -> [B, L] (0 off the response).
    """
    return adv[:, None] * response_mask.to(adv.dtype)


# ---------------------------------------------------------------------------------------------
# policy losses and KL
# ---------------------------------------------------------------------------------------------


@register_policy_loss("ppo_clip")
def ppo_clip_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-clip surrogate with asymmetric clipping, token-mean over the batch.

        rho_t  = exp(logp_t - logp_old_t)           (log-ratio bounded to +-20)
        l_t    = -min( rho_t A_t, clip(rho_t, 1 - clip_low, 1 + clip_high) A_t )
        loss   = sum_{b,t} mask l_t / sum_{b,t} mask

    logprobs [B, L] (with grad), old_logprobs [B, L], advantages [B, L], mask [B, L].
    Returns (loss scalar, stats) with detached scalar stats:
        clip_frac  fraction of valid tokens where the clipped term is the active one,
        approx_kl  mean(logp_old - logp)  (k1 estimate of KL(old || new)),
        ratio_mean mean(rho).
    """
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    log_ratio = (logprobs - old_logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)  # [B, L]

    loss_unclipped = -ratio * advantages
    loss_clipped = -ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    per_token = torch.maximum(loss_unclipped, loss_clipped)  # = -min(...)
    loss = masked_mean(per_token, mask)

    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((loss_clipped > loss_unclipped).to(logprobs.dtype), mask),
            "approx_kl": masked_mean(old_logprobs - logprobs, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from sampled-token log-probs (Schulman's k1/k2/k3).

        k1 = logp - logp_ref
        k2 = 0.5 (logp - logp_ref)^2
        k3 = exp(logp_ref - logp) - (logp_ref - logp) - 1      (>= 0, low variance)

    logprobs [B, L], ref_logprobs [B, L] -> [B, L]. The reference is detached.
    """
    ref_logprobs = ref_logprobs.detach()
    diff = logprobs - ref_logprobs
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return 0.5 * diff**2
    if estimator == "k3":
        ref_minus = (-diff).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        return torch.exp(ref_minus) - ref_minus - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}; known: k1, k2, k3")
