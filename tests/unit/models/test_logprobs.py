"""Chunked log-probs (and entropy) equal the plain log_softmax over full logits, in value and in gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tdrm_rl.config import load_config
from tdrm_rl.models.load import build_tiny_policy, position_ids_from_mask
from tdrm_rl.models.logprobs import token_logprobs
from tdrm_rl.models.packing import forward_logits
from tdrm_rl.models.tokenizer import build_char_tokenizer


def plain(model, ids, mask):
    """Full [B, L, V] float32 logits, from the same (packed) forward pass."""
    logits = forward_logits(model, ids, mask, position_ids_from_mask(mask))
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = F.pad(logp.gather(-1, ids[:, 1:, None]).squeeze(-1), (1, 0))
    entropy = F.pad(-(logp.exp() * logp).sum(-1), (1, 0))
    return picked, entropy


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    model = build_tiny_policy(build_char_tokenizer(), load_config(None).model, seed=0)
    ids = torch.randint(5, 60, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding: 27% of the slots, so the forward passes pack the rows
    mask[2, :9] = 0
    return model, ids, mask


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize("padded", [True, False])
def test_chunked_logprobs_and_entropy_equal_the_plain_computation(batch, chunk, padded):
    model, ids, mask = batch
    if not padded:
        mask = torch.ones_like(mask)
    want_lp, want_ent = plain(model, ids, mask)
    got_lp, got_ent = token_logprobs(model, ids, mask, with_entropy=True, chunk_tokens=chunk)
    real = mask.bool()
    torch.testing.assert_close(got_lp[real], want_lp[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_ent[real], want_ent[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("entropy_grad", [False, True])
def test_chunked_gradients_equal_the_plain_ones(batch, entropy_grad):
    model, ids, mask = batch
    weights = torch.rand(ids.shape) * mask

    def grads(fn):
        model.zero_grad()
        lp, ent = fn()
        loss = (lp * weights).sum() + (0.1 * (ent * weights).sum() if entropy_grad else 0.0)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    want = grads(lambda: plain(model, ids, mask))
    got = grads(lambda: token_logprobs(model, ids, mask, with_entropy=True, entropy_grad=entropy_grad, chunk_tokens=5))
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4)


def test_entropy_carries_no_gradient_unless_asked(batch):
    model, ids, mask = batch
    _, ent = token_logprobs(model, ids, mask, with_entropy=True)
    assert not ent.requires_grad
    _, ent = token_logprobs(model, ids, mask, with_entropy=True, entropy_grad=True)
    assert ent.requires_grad
