"""The one batch type that crosses every worker call.

Layout of a batch of B trajectories, each a left-padded prompt followed by a right-padded
response, so every sequence has its prompt end at the same column `prompt_len - 1`:

    input_ids      [B, L]  token ids (pad where attention_mask is 0)
    attention_mask [B, L]  1 on real tokens
    response_mask  [B, L]  1 on generated tokens (the ones the policy is trained on)
    step_ends      [B, S]  absolute column of each step's last token (the step-end token)
    step_mask      [B, S]  1 for real steps; steps are prefix-contiguous

Per-token quantities (logprobs, advantages) are [B, L] aligned with input_ids: column t holds
the quantity for token t (predicted from tokens < t). Per-step quantities are [B, S].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

import torch

TENSOR_FIELDS = (
    "input_ids", "attention_mask", "response_mask", "step_ends", "step_mask", "group_ids", "outcome",
    "rollout_logprobs", "old_logprobs", "ref_logprobs", "step_logits", "rewards", "advantages",
)


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    step_ends: torch.Tensor
    step_mask: torch.Tensor
    group_ids: torch.Tensor  # [B] long: trajectories with the same id answer the same prompt
    prompt_len: int
    outcome: Optional[torch.Tensor] = None  # [B] verifiable reward in {0, 1}
    rollout_logprobs: Optional[torch.Tensor] = None  # [B, L] from the rollout engine
    old_logprobs: Optional[torch.Tensor] = None  # [B, L] trainer logprobs before the update
    ref_logprobs: Optional[torch.Tensor] = None  # [B, L] frozen reference
    step_logits: Optional[torch.Tensor] = None  # [B, S] PRM logits at step ends
    rewards: Optional[torch.Tensor] = None  # [B] blended sequence reward
    advantages: Optional[torch.Tensor] = None  # [B, L]
    meta: dict[str, list[Any]] = field(default_factory=dict)  # per-sample python values (text, answers)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum().item())

    def select(self, index: torch.Tensor | list[int] | slice) -> "Batch":
        """Rows `index` of every tensor and meta list."""
        if isinstance(index, slice):
            rows = list(range(len(self)))[index]
        elif isinstance(index, torch.Tensor):
            rows = index.tolist()
        else:
            rows = list(index)
        idx = torch.as_tensor(rows, dtype=torch.long)
        tensors = {name: (t.index_select(0, idx) if t is not None else None) for name, t in self._tensors().items()}
        meta = {k: [v[i] for i in rows] for k, v in self.meta.items()}
        return replace(self, **tensors, meta=meta)

    def chunk(self, size: int) -> list["Batch"]:
        """Consecutive micro-batches of at most `size` rows."""
        return [self.select(slice(i, i + size)) for i in range(0, len(self), size)]

    def trim(self) -> "Batch":
        """Drop columns that are padding in every row (saves compute in forward passes)."""
        used = self.attention_mask.any(dim=0).nonzero()
        last = int(used.max().item()) + 1 if used.numel() else self.prompt_len
        cols = slice(0, max(last, self.prompt_len))
        out = {}
        for name, t in self._tensors().items():
            if t is not None and t.dim() == 2 and t.shape[1] == self.input_ids.shape[1] and name != "step_ends":
                out[name] = t[:, cols]
        return replace(self, **out)

    def to(self, device: torch.device | str) -> "Batch":
        """Every tensor on `device` (a no-op on CPU): workers train on the accelerator their engine uses."""
        if torch.device(device) == self.input_ids.device:
            return self
        return replace(self, **{n: (t.to(device, non_blocking=True) if t is not None else None)
                                for n, t in self._tensors().items()})

    def _tensors(self) -> dict[str, Optional[torch.Tensor]]:
        return {name: getattr(self, name) for name in TENSOR_FIELDS}

    @staticmethod
    def concat(batches: list["Batch"], pad_id: int) -> "Batch":
        """Stack batches that share prompt_len; pads the token axis and step axis on the right."""
        if len({b.prompt_len for b in batches}) != 1:
            raise ValueError("Batch.concat needs one prompt_len; re-collate from token ids instead")
        length = max(b.input_ids.shape[1] for b in batches)
        steps = max(b.step_ends.shape[1] for b in batches)
        merged: dict[str, Any] = {}
        for name in TENSOR_FIELDS:
            parts = [getattr(b, name) for b in batches]
            if any(p is None for p in parts):
                merged[name] = None
                continue
            if parts[0].dim() == 2:
                width = steps if name in ("step_ends", "step_mask", "step_logits") else length
                fill = pad_id if name == "input_ids" else 0
                parts = [torch.nn.functional.pad(p, (0, width - p.shape[1]), value=fill) for p in parts]
            merged[name] = torch.cat(parts, dim=0)
        meta = {k: sum((b.meta.get(k, []) for b in batches), []) for k in batches[0].meta}
        return Batch(**merged, prompt_len=batches[0].prompt_len, meta=meta)
