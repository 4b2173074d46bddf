"""The LM head over chunks of positions: log p(target) (and the entropy) from hidden states, one chunk's
[tokens, vocab] float32 logits at a time, recomputed in backward (activation checkpointing) instead of stored.
Peak memory is `chunk_tokens x vocab`, not `B x L x vocab`, and the numbers are those of the plain computation.
The policy's token log-probs (tdrm_rl/models/logprobs.py) and the PRM's logprob read-out
(tdrm_rl/models/load.py, LogprobValueModel) both run it.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

# Tokens per LM-head chunk: 1024 x a 151k vocab is 0.6 GB of float32 logits for the chunk in flight.
CHUNK_TOKENS = 1024


def _chunk_logprobs(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor, want_entropy: bool,
                    entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and the entropy at each of [N] positions from hidden [N, H]: float32 logits in between.
    The entropy is detached unless `entropy_grad` (the same pass computes it either way)."""
    logits = head(hidden).float()
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    if not want_entropy:
        return picked, picked.new_zeros(())
    entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return picked, entropy if entropy_grad else entropy.detach()


def head_logprobs(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor, with_entropy: bool = False,
                  entropy_grad: bool = False,
                  chunk_tokens: int = CHUNK_TOKENS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logp[...] = log softmax(head(hidden[..., :]))[targets[...]] for hidden [..., H] and targets [...], and with
    `with_entropy` the entropy of each softmax (else None), in chunks of `chunk_tokens` positions: only one chunk's
    [chunk_tokens, vocab] float32 logits exist at a time, recomputed in backward when a gradient is wanted.
    Values and gradients are those of the plain computation on whole-sequence logits."""
    lead, width = targets.shape, hidden.shape[-1]
    flat_h, flat_t = hidden.reshape(-1, width), targets.reshape(-1)
    wants_grad = torch.is_grad_enabled() and (flat_h.requires_grad or any(p.requires_grad for p in head.parameters()))
    picked, entropy = [flat_h.new_zeros(0, dtype=torch.float32)], [flat_h.new_zeros(0, dtype=torch.float32)]
    for start in range(0, flat_t.numel(), chunk_tokens):
        args = (head, flat_h[start:start + chunk_tokens], flat_t[start:start + chunk_tokens], with_entropy,
                entropy_grad)
        if wants_grad:  # recompute this chunk's logits in backward instead of keeping them
            lp, ent = checkpoint(_chunk_logprobs, *args, use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(*args)
        picked.append(lp)
        entropy.append(ent.reshape(-1))
    logp = torch.cat(picked).reshape(lead)
    return logp, (torch.cat(entropy).reshape(lead) if with_entropy else None)
