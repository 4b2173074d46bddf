"""Turn generated token ids into a Batch: pad, locate step ends, attach group ids. No re-tokenisation."""

from __future__ import annotations

from typing import Sequence

import torch

from tdrm_rl.data.batch import Batch
from tdrm_rl.data.segment import pad_step_ends, step_end_positions


class TokenTexts:
    """Decoded text of single token ids, cached: step segmentation works on token pieces."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}
        self.special = set(tokenizer.all_special_ids)

    def __call__(self, ids: Sequence[int]) -> list[str]:
        out = []
        for i in ids:
            piece = self.cache.get(i)
            if piece is None:
                piece = "" if i in self.special else self.tokenizer.decode([i])
                self.cache[i] = piece
            out.append(piece)
        return out


def collate(prompt_ids: list[list[int]], response_ids: list[list[int]], group_ids: list[int],
            token_texts: TokenTexts, pad_id: int, delimiter: str = "\n\n", max_steps: int | None = None,
            rollout_logprobs: list[list[float]] | None = None, meta: dict | None = None) -> Batch:
    """Left-pad prompts to a common length P, right-pad responses to R: input_ids [B, P + R]."""
    batch_size = len(prompt_ids)
    prompt_len = max(len(p) for p in prompt_ids)
    resp_len = max(1, max(len(r) for r in response_ids))
    length = prompt_len + resp_len
    input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
    response_mask = torch.zeros((batch_size, length), dtype=torch.float32)
    logprobs = torch.zeros((batch_size, length), dtype=torch.float32) if rollout_logprobs is not None else None
    ends = []
    for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        start = prompt_len - len(p)
        input_ids[b, start:prompt_len] = torch.as_tensor(p, dtype=torch.long)
        attention_mask[b, start:prompt_len] = 1
        if r:
            input_ids[b, prompt_len:prompt_len + len(r)] = torch.as_tensor(r, dtype=torch.long)
            attention_mask[b, prompt_len:prompt_len + len(r)] = 1
            response_mask[b, prompt_len:prompt_len + len(r)] = 1.0
            if logprobs is not None:
                logprobs[b, prompt_len:prompt_len + len(r)] = torch.as_tensor(rollout_logprobs[b][:len(r)])
        ends.append(step_end_positions(token_texts(r), delimiter, max_steps=max_steps))
    step_ends, step_mask = pad_step_ends(ends, offset=prompt_len, max_steps=max_steps)
    return Batch(input_ids=input_ids, attention_mask=attention_mask, response_mask=response_mask,
                 step_ends=step_ends, step_mask=step_mask, group_ids=torch.as_tensor(group_ids, dtype=torch.long),
                 prompt_len=prompt_len, rollout_logprobs=logprobs, meta=dict(meta or {}))
