"""Masked reductions. `mask [B, L]` marks the entries that count; masked entries may hold anything."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["masked_sum", "masked_mean", "masked_whiten"]


def masked_sum(x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """sum(x * mask) over `dim` (all dims if None). Masked entries of x may hold anything, even NaN."""
    x = torch.where(mask != 0, x, torch.zeros_like(x)) * mask.to(x.dtype)
    return x.sum() if dim is None else x.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """sum(x * mask) / sum(mask) over `dim` (all dims if None); 0 where the mask is empty."""
    total = mask.to(x.dtype).sum() if dim is None else mask.to(x.dtype).sum(dim=dim)
    return masked_sum(x, mask, dim) / total.clamp(min=1e-8)


def masked_whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / (std + eps) over all masked entries (population std); 0 off the mask.

    The global batch normalisation of REINFORCE++ and of PPO's advantages.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) / (var.sqrt() + eps)
    return torch.where(mask != 0, out, torch.zeros_like(out))
