"""Policy losses, loss aggregation, KL estimators.

Aggregation modes (l = per-token loss, m = mask, rows b, tokens t):

    token_mean:           sum_{b,t} m l / sum_{b,t} m             (every token weighs the same)
    seq_mean_token_sum:   (1/B) sum_b sum_t m l                    (Dr. GRPO: no length normalisation)
    seq_mean_token_mean:  (1/B) sum_b (sum_t m l / sum_t m)        (original GRPO: every response weighs the same)

B counts the rows with at least one valid token.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tdrm_rl.algos.masked import masked_mean
from tdrm_rl.algos.registry import register_policy_loss

__all__ = ["LOSS_AGG_MODES", "KL_ESTIMATORS", "aggregate_loss", "agg_weight", "ppo_clip_loss", "kl_penalty"]

LOSS_AGG_MODES = ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean")
KL_ESTIMATORS = ("k1", "k2", "k3")

# exp() of a log-ratio beyond this is numerically meaningless; bound it so one bad token cannot
# turn the whole loss into inf/NaN.
_MAX_LOG_RATIO = 20.0
# k3 is capped as verl caps its low-variance KL: one token with logp_ref - logp near 10 would add e^10 ~ 2.2e4.
K3_CAP = 10.0


def _check_agg(mode: str) -> None:
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; known: {', '.join(LOSS_AGG_MODES)}")


def aggregate_loss(per_token: Tensor, mask: Tensor, mode: str = "token_mean") -> Tensor:
    """Reduce a per-token loss [B, L] to a scalar by `mode` (see the module docstring)."""
    _check_agg(mode)
    if mode == "token_mean":
        return masked_mean(per_token, mask)
    m = mask.to(per_token.dtype)
    rows = (m.sum(dim=1) > 0).to(per_token.dtype)
    per_row = masked_mean(per_token, mask, dim=1) if mode == "seq_mean_token_mean" else \
        torch.where(mask != 0, per_token, torch.zeros_like(per_token)).mul(m).sum(dim=1)
    return (per_row * rows).sum() / rows.sum().clamp(min=1.0)


def agg_weight(chunk_mask: Tensor, total_mask: Tensor, mode: str = "token_mean") -> Tensor:
    """Weight of a micro-batch's aggregated loss inside its mini-batch, so gradient accumulation of
    weight * aggregate_loss(chunk) equals aggregate_loss(whole mini-batch): its share of the tokens
    (token_mean) or of the non-empty rows (the seq_mean modes)."""
    _check_agg(mode)
    if mode == "token_mean":
        return chunk_mask.sum() / total_mask.sum().clamp(min=1.0)
    return (chunk_mask.sum(1) > 0).sum() / (total_mask.sum(1) > 0).sum().clamp(min=1)


@register_policy_loss("ppo_clip")
def ppo_clip_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float = 0.0,
    agg: str = "token_mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-clip surrogate with asymmetric clipping (DAPO clip-higher) and optional dual-clip.

        rho_t  = exp(logp_t - logp_old_t)           (log-ratio bounded to +-20)
        l_t    = -min( rho_t A_t, clip(rho_t, 1 - clip_low, 1 + clip_high) A_t )
        l_t    = min( l_t, -dual_clip * A_t )  where A_t < 0      (dual-clip, when dual_clip > 1)
        loss   = aggregate_loss(l, mask, agg)

    logprobs [B, L] (with grad), old_logprobs [B, L], advantages [B, L], mask [B, L].
    Returns (loss scalar, stats) with detached scalar stats:
        clip_frac       fraction of valid tokens where the clipped term is the active one,
        dual_clip_frac  fraction where the dual-clip bound is active,
        approx_kl       mean(logp_old - logp)  (k1 estimate of KL(old || new)),
        ratio_mean      mean(rho).
    """
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    log_ratio = (logprobs - old_logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)  # [B, L]

    loss_unclipped = -ratio * advantages
    loss_clipped = -ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    per_token = torch.maximum(loss_unclipped, loss_clipped)  # = -min(...)
    dual_active = torch.zeros_like(per_token, dtype=torch.bool)
    if dual_clip > 1.0:
        # A negative advantage with a huge ratio would give an unbounded loss; cap it at -c * A.
        bound = -dual_clip * advantages
        dual_active = (advantages < 0) & (per_token > bound)
        per_token = torch.where(dual_active, bound, per_token)
    loss = aggregate_loss(per_token, mask, agg)

    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((loss_clipped > loss_unclipped).to(logprobs.dtype), mask),
            "dual_clip_frac": masked_mean(dual_active.to(logprobs.dtype), mask),
            "approx_kl": masked_mean(old_logprobs - logprobs, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from sampled-token log-probs (Schulman's k1/k2/k3).

        k1 = logp - logp_ref
        k2 = 0.5 (logp - logp_ref)^2
        k3 = exp(logp_ref - logp) - (logp_ref - logp) - 1      (>= 0, low variance), capped at K3_CAP

    k3 is clamped to [-K3_CAP, K3_CAP] = [-10, 10] as verl does (its log-ratio first to +-20): a token the
    policy has made far less likely than the reference adds at most 10 to the loss and no gradient (the cap
    is flat), instead of exp(10) ~ 2.2e4. Below the cap (logp_ref - logp < ~2.53) k3 and its gradient are exact.

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
        return (torch.exp(ref_minus) - ref_minus - 1.0).clamp(-K3_CAP, K3_CAP)
    raise ValueError(f"unknown KL estimator {estimator!r}; known: k1, k2, k3")
