"""Per-token log-probabilities from one forward pass (shared by rollout and trainer, so they agree)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tdrm_rl.models.load import position_ids_from_mask
from tdrm_rl.models.packing import forward_logits


def token_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   with_entropy: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """logp[b, t] = log p(input_ids[b, t] | input_ids[b, :t]); column 0 is 0.  Shapes [B, L].

    With `with_entropy`, also returns the entropy of the predictive distribution at each column.
    """
    logits = forward_logits(model, input_ids, attention_mask, position_ids_from_mask(attention_mask))
    logits = logits[:, :-1].float()
    log_probs = F.log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    picked = F.pad(picked, (1, 0))
    if not with_entropy:
        return picked
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return picked, F.pad(entropy, (1, 0))
