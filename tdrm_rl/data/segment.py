"""Step segmentation: split a response into reasoning steps and find each step's last token.

A step ends at a delimiter (default a blank line, "\\n\\n") or at the end of the response.
The PRM reads V(s_t) at the token where step t ends, so one forward pass over the whole
trajectory scores every prefix (causal attention).

Delimiter occurrences are found left to right without overlap, exactly like `str.split`, so
`split_steps(text)` and `step_end_positions(tokens)` always agree on the number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["split_steps", "step_end_positions", "pad_step_ends", "gather_at"]


def _check_delimiter(delimiter: str) -> None:
    if not delimiter:
        raise ValueError("step delimiter must be a non-empty string (the default is a blank line, '\\n\\n')")


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """The steps of `text`: the pieces between delimiters, stripped, with empty pieces dropped.

    split_steps("a\\n\\n\\n\\nb\\n\\n ") == ["a", "b"]
    """
    _check_delimiter(delimiter)
    return [piece.strip() for piece in text.split(delimiter) if piece.strip()]


def _keep_max_steps(ends: list[int], max_steps: int | None) -> list[int]:
    """Keep the first max_steps-1 ends plus the final one (the answer step is never dropped)."""
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if max_steps is None or len(ends) <= max_steps:
        return ends
    return ends[: max_steps - 1] + ends[-1:]


def step_end_positions(
    token_texts: Sequence[str],
    delimiter: str = "\n\n",
    max_steps: int | None = None,
) -> list[int]:
    """Index (into token_texts) of the token where each non-empty step ends.

    With text = "".join(token_texts), split at the delimiter left to right:
      * a piece before a delimiter is a step if it holds non-whitespace; it ends at the token
        that contains the delimiter's LAST character;
      * the piece after the last delimiter is the final step if it holds non-whitespace; it ends
        at the last token whose text is not all whitespace.
    So a response without a delimiter has one step, a blank response none. A delimiter may span
    tokens and a token may hold several delimiters. With max_steps set and exceeded, the first
    max_steps-1 ends and the final end are kept. Runs in time linear in the text length.
    """
    _check_delimiter(delimiter)
    text = "".join(token_texts)
    token_end_char: list[int] = []  # exclusive end offset of each token in `text`
    offset = 0
    for tok in token_texts:
        offset += len(tok)
        token_end_char.append(offset)

    ends: list[int] = []
    token = 0  # moves only forward: the char positions we map are increasing
    piece_start = 0
    while (hit := text.find(delimiter, piece_start)) != -1:
        if text[piece_start:hit].strip():
            last_char = hit + len(delimiter) - 1
            while token_end_char[token] <= last_char:
                token += 1
            ends.append(token)
        piece_start = hit + len(delimiter)

    if text[piece_start:].strip():
        last_token = len(token_texts) - 1
        while not token_texts[last_token].strip():
            last_token -= 1
        ends.append(last_token)
    return _keep_max_steps(ends, max_steps)


def pad_step_ends(
    step_ends: Sequence[Sequence[int]],
    offset: Sequence[int] | Tensor | int = 0,
    max_steps: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Pad ragged per-response step ends into a batch.

        ends[b, i] = step_ends[b][i] + offset[b]   for i < T_b, else 0
        mask[b, i] = 1                             for i < T_b, else 0

    `offset` is where each response's first token sits in the full (prompt + response) sequence.
    With max_steps set, longer rows keep their first max_steps-1 ends and the final one. The
    width is S = max(1, max_b T_b) after that cut, so S <= max_steps.

    Returns (step_ends [B, S] long, step_mask [B, S] float).
    """
    rows = [_keep_max_steps(list(row), max_steps) for row in step_ends]
    B = len(rows)
    S = max([1] + [len(r) for r in rows])
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)  # T [B]
    flat_ends = torch.tensor([e for r in rows for e in r], dtype=torch.long)  # [sum T]
    row_of = torch.repeat_interleave(torch.arange(B), lengths)  # [sum T]
    row_start = torch.cumsum(lengths, 0) - lengths  # [B]
    col_of = torch.arange(flat_ends.numel()) - row_start[row_of]  # [sum T]

    ends = torch.zeros(B, S, dtype=torch.long)
    mask = torch.zeros(B, S, dtype=torch.float32)
    ends[row_of, col_of] = flat_ends
    mask[row_of, col_of] = 1.0

    offset = torch.as_tensor(offset, dtype=torch.long)
    if offset.dim() == 0:
        offset = offset.expand(B)
    if offset.shape != (B,):
        raise ValueError(f"offset must be an int or have one entry per response ({B}), got shape {tuple(offset.shape)}")
    ends = torch.where(mask != 0, ends + offset[:, None], ends)
    return ends, mask


def gather_at(per_token: Tensor, step_ends: Tensor, step_mask: Tensor) -> Tensor:
    """Read a per-token quantity at the step-end tokens: out[b, i] = per_token[b, step_ends[b, i]].

    per_token [B, L], step_ends [B, S] long, step_mask [B, S] -> [B, S], 0 at masked steps.
    """
    L = per_token.shape[1]
    valid = step_mask != 0
    idx = torch.where(valid, step_ends, torch.zeros_like(step_ends))  # padding reads token 0
    if bool(((idx < 0) | (idx >= L))[valid].any()):
        raise IndexError(f"a step end lies outside the {L} token positions; check the offsets given to pad_step_ends")
    if L == 0:
        return per_token.new_zeros(step_ends.shape)
    out = per_token.gather(1, idx)
    return torch.where(valid, out, torch.zeros_like(out))
