"""Temporal-difference targets and loss for the process reward model (TDRM).

A trajectory has T >= 1 steps. Step index i = 0..T-1 is the state s_{i+1}: the prompt plus
the first i+1 reasoning steps. i = T-1 is the terminal state; its step holds the final answer,
so its value is known exactly: the verifiable outcome (1 right, 0 wrong).

Batches are padded to [B, S] with a prefix-contiguous `step_mask [B, S]` (1 for i < T_b).

Notation used in the docstrings below:

    W_j = V_j        for j <  T-1   (network value, bootstrapped, no gradient)
    W_j = outcome    for j == T-1   (episode over: the bootstrap term is replaced by the truth)

The targets are semi-gradient: every value that feeds a target is detached.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "num_steps",
    "terminal_mask",
    "nstep_targets",
    "lambda_targets",
    "prm_td_loss",
    "ema_update",
    "mean_abs_td_error",
    "td_targets",
]


def num_steps(step_mask: Tensor) -> Tensor:
    """Number of valid steps per row: T_b = sum_i step_mask[b, i].

    step_mask [B, S] (bool or 0/1 float) -> T [B] long.
    """
    return (step_mask != 0).sum(dim=-1).long()


def terminal_mask(step_mask: Tensor) -> Tensor:
    """True at the terminal step i = T_b - 1 of every row (all False for a row with T_b = 0).

    step_mask [B, S] -> is_terminal [B, S] bool.
    """
    S = step_mask.shape[-1]
    T = num_steps(step_mask)  # [B]
    step_idx = torch.arange(S, device=step_mask.device)  # [S]
    return step_idx[None, :] == (T[:, None] - 1)


def _bootstrap_table(values: Tensor, step_mask: Tensor, outcome: Tensor) -> Tensor:
    """W [B, S]: detached V_j before the terminal step, the outcome at it, 0 on padding."""
    valid = step_mask != 0
    is_terminal = terminal_mask(step_mask)
    outcome_bs = outcome.to(values.dtype)[:, None].expand_as(values)
    W = torch.where(is_terminal, outcome_bs, values.detach())
    return torch.where(valid, W, torch.zeros_like(W))


def _rewards_or_zeros(rewards: Tensor | None, values: Tensor) -> Tensor:
    if rewards is None:
        return torch.zeros_like(values)
    if rewards.shape != values.shape:
        raise ValueError(f"rewards has shape {tuple(rewards.shape)}, expected {tuple(values.shape)} like values")
    return rewards.detach().to(values.dtype)


def no_shaping(step_mask: Tensor, coef: float) -> Tensor:
    """Intermediate rewards r_i = 0: the only signal is the verifiable outcome at the end (the paper)."""
    return torch.zeros_like(step_mask, dtype=torch.float32)


def step_penalty(step_mask: Tensor, coef: float) -> Tensor:
    """r_i = -coef on every transition out of a non-terminal step: each extra step lowers the earlier values."""
    r = -coef * (step_mask != 0).float()
    return torch.where(terminal_mask(step_mask), torch.zeros_like(r), r)


# prm.shaping: name -> f(step_mask [B, S], coef) -> intermediate rewards r [B, S]
SHAPINGS = {"none": no_shaping, "step_penalty": step_penalty}


def nstep_targets(
    values: Tensor,
    rewards: Tensor | None,
    step_mask: Tensor,
    outcome: Tensor,
    n: int,
    gamma: float,
) -> Tensor:
    """n-step TD targets, truncated at the end of the episode.

        y_{T-1} = outcome
        y_i     = clamp( sum_{k<m} gamma^k r_{i+k} + gamma^m W_{i+m}, 0, 1 ),   m = min(n, T-1-i)

    When i + n runs past the terminal step, the sum stops at T-1 and the bootstrap term becomes
    the exact terminal value (the outcome), i.e. the network bootstrap is dropped.

    Args:
        values    [B, S]: V(s) used for bootstrapping (detached here; pass the online or EMA net).
        rewards   [B, S] or None: r_i on the transition out of state i (None -> zeros).
        step_mask [B, S]: 1 for i < T_b, prefix-contiguous.
        outcome   [B]:    verifiable reward in {0, 1}.
        n: lookahead (>= 1).  gamma: discount.

    Returns:
        targets [B, S], 0 at masked positions.
    """
    if n < 1:
        raise ValueError(f"n-step TD needs n >= 1, got n={n}")
    B, S = values.shape
    rewards = _rewards_or_zeros(rewards, values)
    W = _bootstrap_table(values, step_mask, outcome)  # [B, S]
    T = num_steps(step_mask)  # [B]
    step_idx = torch.arange(S, device=values.device)  # [S]

    steps_to_end = (T[:, None] - 1 - step_idx[None, :]).clamp(min=0)  # [B, S]  T-1-i
    m = steps_to_end.clamp(max=n)  # [B, S]  how many rewards are summed

    targets = torch.zeros_like(values)
    for k in range(min(n, S)):  # m <= T-1 < S, so larger k never contribute
        r_ik = torch.zeros_like(rewards)  # r_{i+k}, zero past the right edge
        r_ik[:, : S - k] = rewards[:, k:]
        targets = targets + torch.where(k < m, (gamma**k) * r_ik, torch.zeros_like(r_ik))

    boot_idx = (step_idx[None, :] + m).clamp(max=S - 1)  # [B, S]  i + m
    W_boot = W.gather(1, boot_idx)
    discount = torch.pow(torch.full_like(values, gamma), m.to(values.dtype))  # gamma^m (0^0 = 1)
    targets = (targets + discount * W_boot).clamp(0.0, 1.0)
    return torch.where(step_mask != 0, targets, torch.zeros_like(targets))


def lambda_targets(
    values: Tensor,
    rewards: Tensor | None,
    step_mask: Tensor,
    outcome: Tensor,
    gamma: float,
    lam: float,
) -> Tensor:
    """TD(lambda) targets: lambda-returns over the step values, by the backward recursion

        G_{T-1} = outcome
        G_i     = r_i + gamma * ( (1 - lam) * W_{i+1} + lam * G_{i+1} )
        y_i     = clamp(G_i, 0, 1)

    lam = 0 gives the 1-step target; lam = 1 gives the Monte-Carlo return. The clamp is applied
    once, to the finished returns (the recursion runs on unclamped G), so both limits match
    `nstep_targets` exactly.

    Shapes as in `nstep_targets`; returns targets [B, S], 0 at masked positions.
    """
    B, S = values.shape
    rewards = _rewards_or_zeros(rewards, values)
    W = _bootstrap_table(values, step_mask, outcome)  # [B, S]
    is_terminal = terminal_mask(step_mask)  # [B, S]
    outcome = outcome.to(values.dtype)

    returns = torch.zeros_like(values)  # G [B, S]
    G_next = torch.zeros_like(outcome)  # G_{i+1} [B]
    W_next = torch.zeros_like(outcome)  # W_{i+1} [B]
    for i in reversed(range(S)):
        G_i = rewards[:, i] + gamma * ((1.0 - lam) * W_next + lam * G_next)
        G_i = torch.where(is_terminal[:, i], outcome, G_i)
        returns[:, i] = G_i
        G_next, W_next = G_i, W[:, i]

    targets = returns.clamp(0.0, 1.0)
    return torch.where(step_mask != 0, targets, torch.zeros_like(targets))


def prm_td_loss(
    logits: Tensor,
    targets: Tensor,
    step_mask: Tensor,
    terminal_weight: float = 1.0,
) -> Tensor:
    """Weighted BCE between sigmoid(logit) and the TD target, averaged over valid steps.

        l_i  = -[ y_i log sigmoid(z_i) + (1 - y_i) log(1 - sigmoid(z_i)) ]
        w_i  = step_mask_i * (terminal_weight if i == T-1 else 1)
        loss = sum_i w_i l_i / sum_i w_i          (0 when sum_i w_i = 0)

    logits [B, S] (with grad), targets [B, S] (detached here), step_mask [B, S] -> scalar.
    """
    valid = step_mask != 0
    # Padding may hold anything (even inf); zero it so it cannot leak NaN into the sum or grad.
    logits = logits.masked_fill(~valid, 0.0)
    targets = targets.detach().to(logits.dtype).masked_fill(~valid, 0.0)
    per_step = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # [B, S]

    weights = valid.to(logits.dtype)
    weights = torch.where(terminal_mask(step_mask), weights * terminal_weight, weights)
    return (weights * per_step).sum() / weights.sum().clamp(min=1e-8)


@torch.no_grad()
def ema_update(target_params: Iterable[Tensor], online_params: Iterable[Tensor], decay: float) -> None:
    """In-place EMA of the online network into the target copy used for bootstrapping.

        theta_target <- decay * theta_target + (1 - decay) * theta_online

    decay = 1 freezes the target; decay = 0 copies the online weights.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema decay must be in [0, 1], got {decay}")
    target_list, online_list = list(target_params), list(online_params)
    if len(target_list) != len(online_list):
        raise ValueError(
            f"ema_update got {len(target_list)} target tensors but {len(online_list)} online tensors; "
            "pass the parameters of two copies of the same model"
        )
    for target, online in zip(target_list, online_list):
        target.lerp_(online.detach().to(target.dtype), 1.0 - decay)


def mean_abs_td_error(values: Tensor, targets: Tensor, step_mask: Tensor) -> Tensor:
    """Mean |V_i - y_i| over valid steps (0 when there are none).

    values [B, S], targets [B, S], step_mask [B, S] -> scalar.
    """
    valid = step_mask != 0
    abs_err = torch.where(valid, (values.detach() - targets.detach()).abs(), torch.zeros_like(values))
    return abs_err.sum() / valid.sum().clamp(min=1)


def td_targets(cfg, bootstrap_logits: Tensor, batch) -> Tensor:
    """The recipe's TD targets y [B, S] (`cfg`: a PRMConfig; `batch`: step_mask [B, S] and outcome [B]).

    Bootstrap values are sigmoid(logits) without gradient; rewards come from the `prm.shaping` hook (default
    all 0); `prm.td_mode` picks n-step (n_step, gamma) or TD(lambda) (gamma, lam).
    """
    values = torch.sigmoid(bootstrap_logits.detach().float())
    rewards = SHAPINGS[cfg.shaping](batch.step_mask, cfg.shaping_coef).to(values)
    if cfg.td_mode == "lambda":
        return lambda_targets(values, rewards, batch.step_mask, batch.outcome, cfg.gamma, cfg.lam)
    return nstep_targets(values, rewards, batch.step_mask, batch.outcome, cfg.n_step, cfg.gamma)
