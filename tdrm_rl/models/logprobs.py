"""Per-token log-probabilities from one forward pass (shared by rollout and trainer, so they agree).

The LM head runs over chunks of tokens (tdrm_rl/models/lm_head.py), each chunk's [tokens, vocab] float32 logits
recomputed in backward (activation checkpointing) instead of stored: peak memory is `chunk_tokens x vocab`, not
`B x L x vocab`, and the numbers are those of the plain computation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tdrm_rl.models.lm_head import CHUNK_TOKENS, head_logprobs
from tdrm_rl.models.load import position_ids_from_mask
from tdrm_rl.models.packing import forward_hidden, forward_logits


def _head_and_decoder(model: Any) -> tuple[Any, Any] | None:
    """The LM head and the decoder under it, when the logits are just head(hidden) (no soft-capping)."""
    base = getattr(model, "module", model)  # a DeepSpeed engine wraps the HF model
    get_head, get_decoder = getattr(base, "get_output_embeddings", None), getattr(base, "get_decoder", None)
    if get_head is None or get_decoder is None or getattr(base.config, "final_logit_softcapping", None):
        return None
    head, decoder = get_head(), get_decoder()
    return (head, decoder) if isinstance(head, torch.nn.Linear) and decoder is not None else None


def token_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   with_entropy: bool = False, entropy_grad: bool = False,
                   chunk_tokens: int = CHUNK_TOKENS) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """logp[b, t] = log p(input_ids[b, t] | input_ids[b, :t]); column 0 is 0.  Shapes [B, L].

    With `with_entropy`, also returns the entropy of the predictive distribution at each column; it carries a
    gradient only with `entropy_grad` (an entropy bonus in the loss), else it is a metric computed without one.
    """
    position_ids = position_ids_from_mask(attention_mask)
    parts = _head_and_decoder(model)
    if parts is None:  # a model whose logits are not a plain linear head: the direct computation
        logits = forward_logits(model, input_ids, attention_mask, position_ids)[:, :-1].float()
        log_probs = F.log_softmax(logits, dim=-1)
        picked = F.pad(log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1), (1, 0))
        if not with_entropy:
            return picked
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return picked, F.pad(entropy if entropy_grad else entropy.detach(), (1, 0))
    head, decoder = parts
    hidden = forward_hidden(decoder, input_ids, attention_mask, position_ids)[:, :-1]
    logp, entropy = head_logprobs(head, hidden, input_ids[:, 1:], with_entropy, entropy_grad, chunk_tokens)
    if not with_entropy:
        return F.pad(logp, (1, 0))
    return F.pad(logp, (1, 0)), F.pad(entropy, (1, 0))


def min_logprob_step_logits(token_logp: torch.Tensor, response_mask: torch.Tensor, step_ends: torch.Tensor,
                            step_mask: torch.Tensor) -> torch.Tensor:
    """The policy-log-prob verifier: V(s_i) = exp(lowest response-token log-prob up to step i's end).

    It needs no training: a token the policy itself finds unlikely marks a likely mistake. Returned as
    logits (log V - log(1 - V), float64 so near-certain prefixes stay distinct), so it drops into every
    place that reads PRM step logits (Best-of-N aggregations, step metrics).

    token_logp [B, L] (`token_logprobs`), response_mask [B, L], step_ends [B, S], step_mask [B, S] -> [B, S].
    """
    logp = torch.where(response_mask != 0, token_logp.double(), torch.zeros_like(token_logp, dtype=torch.float64))
    running_min = torch.cummin(logp, dim=1).values  # prompt columns hold 0, so they never win the min
    idx = torch.where(step_mask != 0, step_ends.long(), torch.zeros_like(step_ends, dtype=torch.long))
    m = running_min.gather(1, idx).clamp(max=-1e-300)
    logits = m - torch.log(-torch.expm1(m))
    return torch.where(step_mask != 0, logits, torch.zeros_like(logits))
