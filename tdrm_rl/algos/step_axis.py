"""Moving quantities between the step axis [B, S] and the token axis [B, L].

Step i of a response covers the response tokens after step i-1's end token, up to and including
its own end token `step_ends[b, i]`. Tokens after the last step end (e.g. an EOS) belong to the
last step.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["token_step_index", "spread_steps_to_tokens", "place_at_step_ends", "sum_tokens_per_step",
           "last_response_index"]


def token_step_index(step_ends: Tensor, step_mask: Tensor, length: int) -> Tensor:
    """idx [B, L] long: the step that column t belongs to, = #{valid step ends < t}, at most T-1 (>= 0)."""
    valid = step_mask != 0
    big = torch.iinfo(torch.long).max
    ends = torch.where(valid, step_ends.long(), torch.full_like(step_ends.long(), big))  # sorted per row
    cols = torch.arange(length, device=step_ends.device).expand(step_ends.shape[0], length).contiguous()
    idx = torch.searchsorted(ends, cols, side="left")  # number of ends < t
    last = (valid.sum(dim=1) - 1).clamp(min=0)[:, None]
    return torch.minimum(idx, last)


def spread_steps_to_tokens(step_values: Tensor, step_ends: Tensor, step_mask: Tensor,
                           response_mask: Tensor) -> Tensor:
    """x[b, t] = step_values[b, step of t] on response tokens, 0 elsewhere.  [B, S] -> [B, L]."""
    idx = token_step_index(step_ends, step_mask, response_mask.shape[1])
    out = step_values.gather(1, idx)
    return out * response_mask.to(out.dtype)


def place_at_step_ends(step_values: Tensor, step_ends: Tensor, step_mask: Tensor, length: int) -> Tensor:
    """x[b, step_ends[b, i]] = step_values[b, i] for valid steps, 0 elsewhere.  [B, S] -> [B, L]."""
    vals = torch.where(step_mask != 0, step_values, torch.zeros_like(step_values))
    idx = step_ends.long().clamp(0, length - 1)
    return torch.zeros(step_values.shape[0], length, dtype=vals.dtype, device=vals.device).scatter_add_(1, idx, vals)


def sum_tokens_per_step(token_values: Tensor, step_ends: Tensor, step_mask: Tensor, response_mask: Tensor) -> Tensor:
    """s[b, i] = sum of token_values over the response tokens of step i.  [B, L] -> [B, S]."""
    idx = token_step_index(step_ends, step_mask, token_values.shape[1])
    vals = torch.where(response_mask != 0, token_values, torch.zeros_like(token_values))
    out = torch.zeros(step_mask.shape, dtype=vals.dtype, device=vals.device).scatter_add_(1, idx, vals)
    return torch.where(step_mask != 0, out, torch.zeros_like(out))


def last_response_index(response_mask: Tensor) -> Tensor:
    """Column of each row's last response token [B] (L-1 for an empty response, which is masked anyway)."""
    L = response_mask.shape[1]
    return L - 1 - (response_mask != 0).flip(1).int().argmax(dim=1)
