"""Padding-free forward passes: the real tokens of a padded [B, L] batch packed into fewer rows.

Rows are packed first-fit-decreasing into bins of at most L tokens. Each packed sequence's position
ids restart at 0 and no attention mask is passed, so transformers builds a block-causal mask from
the position ids (one sequence never attends to another). Outputs are scattered back to [B, L].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Pack only where padding wastes more than this share of the token slots: below it the gather and
# scatter cost about what the padding does.
PACK_MIN_PADDING = 0.2


@dataclass
class Packed:
    input_ids: torch.Tensor  # [R, C] real tokens of several sequences per row, pad after them
    position_ids: torch.Tensor  # [R, C] restart at 0 for each sequence (and for the trailing pad)
    src: tuple[torch.Tensor, torch.Tensor]  # (b, t) of every real token in the padded batch
    dst: tuple[torch.Tensor, torch.Tensor]  # (row, col) of the same token in the packed batch


def padding_share(attention_mask: torch.Tensor) -> float:
    return 1.0 - float(attention_mask.sum()) / max(attention_mask.numel(), 1)


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int = 0) -> Packed:
    """First-fit-decreasing packing of each row's real tokens (in order) into rows of width L."""
    real = attention_mask.bool()
    lengths = real.sum(1).tolist()
    capacity = input_ids.shape[1]
    bins: list[int] = []  # used tokens per packed row
    where = [0] * len(lengths)  # (packed row, start col) per source row
    for b in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, used in enumerate(bins) if used + lengths[b] <= capacity), None)
        if row is None:
            row = len(bins)
            bins.append(0)
        where[b] = (row, bins[row])
        bins[row] += lengths[b]
    src_b, src_t = real.nonzero(as_tuple=True)
    offset = real.long().cumsum(1) - 1  # index of each real token within its sequence
    rank = offset[src_b, src_t]
    starts = torch.tensor([where[b] for b in range(len(lengths))], dtype=torch.long).reshape(-1, 2)
    dst_r = starts[src_b, 0]
    dst_c = starts[src_b, 1] + rank
    width = max(bins) if bins else 1
    ids = torch.full((max(len(bins), 1), width), pad_id, dtype=input_ids.dtype)
    ids[dst_r, dst_c] = input_ids[src_b, src_t]
    # Trailing pad of a row is its own "sequence" (positions restart at 0), so it touches nothing real.
    pos = torch.arange(width).repeat(ids.shape[0], 1)
    filled = torch.zeros(ids.shape, dtype=torch.bool)
    filled[dst_r, dst_c] = True
    pos[dst_r, dst_c] = rank
    tail_start = torch.tensor(bins + [0] * (ids.shape[0] - len(bins)))[:, None]
    pos = torch.where(filled, pos, pos - tail_start)
    return Packed(ids, pos, (src_b, src_t), (dst_r, dst_c))


def unpack(packed_out: torch.Tensor, packed: Packed, shape: tuple[int, int]) -> torch.Tensor:
    """[R, C, ...] outputs back to the padded [B, L, ...] layout; zeros at padding."""
    out = packed_out.new_zeros(shape + tuple(packed_out.shape[2:]))
    out[packed.src] = packed_out[packed.dst]
    return out


def forward_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor, min_padding: float = PACK_MIN_PADDING) -> torch.Tensor:
    """model(...).logits [B, L, ...], from a packed batch when padding wastes more than `min_padding`."""
    return _forward(model, input_ids, attention_mask, position_ids, min_padding, lambda out: out.logits)


def forward_hidden(decoder: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor, min_padding: float = PACK_MIN_PADDING) -> torch.Tensor:
    """The decoder's last hidden state [B, L, H] (no LM head), packed like `forward_logits`."""
    return _forward(decoder, input_ids, attention_mask, position_ids, min_padding, lambda out: out.last_hidden_state)


def _forward(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
             min_padding: float, read: Any) -> torch.Tensor:
    if padding_share(attention_mask) <= min_padding:
        return read(model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False))
    packed = pack(input_ids, attention_mask)
    out = read(model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False))
    return unpack(out, packed, tuple(input_ids.shape))
