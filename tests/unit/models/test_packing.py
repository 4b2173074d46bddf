"""Padding-free (packed) forward passes give the padded batch's outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from tdrm_rl.config import ModelConfig
from tdrm_rl.models.logprobs import token_logprobs
from tdrm_rl.models.load import build_tiny_policy, position_ids_from_mask
from tdrm_rl.models.packing import PACK_MIN_PADDING, forward_logits, pack, padding_share, unpack

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)


def padded(spans: list[tuple[int, int]], width: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 40, (len(spans), width), generator=gen)
    mask = torch.zeros_like(ids)
    for b, (start, end) in enumerate(spans):
        mask[b, start:end] = 1
    return ids, mask


SPANS = [(0, 40), (5, 30), (10, 20), (2, 12), (0, 8), (20, 40), (39, 40)]


def test_pack_layout_fits_rows_and_restarts_positions() -> None:
    ids, mask = padded(SPANS, 40)
    packed = pack(ids, mask, pad_id=0)
    assert packed.input_ids.shape[1] <= 40
    assert packed.input_ids.shape[0] < len(SPANS)  # fewer rows than the padded batch
    assert torch.equal(packed.input_ids[packed.dst], ids[packed.src])  # every real token, once
    assert len(packed.src[0]) == int(mask.sum())
    assert torch.equal(packed.position_ids[packed.dst], position_ids_from_mask(mask)[packed.src])
    back = unpack(packed.input_ids[..., None].float(), packed, (len(SPANS), 40))[..., 0]
    assert torch.equal(back, (ids * mask).float())


def test_packed_forward_equals_padded_forward(tok) -> None:
    model = build_tiny_policy(tok, SMALL, seed=0).eval()
    ids, mask = padded(SPANS, 40)
    assert padding_share(mask) > PACK_MIN_PADDING  # so forward_logits packs
    pos = position_ids_from_mask(mask)
    padded_logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    packed_logits = forward_logits(model, ids, mask, pos)
    real = mask.bool()
    assert (padded_logits[real] - packed_logits[real]).abs().max().item() < 1e-5
    assert (packed_logits[~real] == 0).all()
    # Gradients of a masked loss agree too (the policy and PRM updates train through this path).
    grads = []
    for fn in (lambda: model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits,
               lambda: forward_logits(model, ids, mask, pos)):
        model.zero_grad()
        (fn()[real].logsumexp(-1).sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert (grads[0] - grads[1]).abs().max().item() < 1e-4
    assert grads[0].abs().max() > 0


def test_token_logprobs_same_with_and_without_packing(tok) -> None:
    model = build_tiny_policy(tok, SMALL, seed=0).eval()
    ids, mask = padded(SPANS, 40, seed=1)
    with torch.no_grad():
        packed = token_logprobs(model, ids, mask)
        # Each row alone, unpadded, is the ground truth.
        for b, (start, end) in enumerate(SPANS[:-1]):  # the last row is a single token: nothing predicted
            alone = token_logprobs(model, ids[b:b + 1, start:end], mask[b:b + 1, start:end])[0]
            assert (packed[b, start + 1:end] - alone[1:]).abs().max().item() < 1e-5


def test_low_padding_is_not_packed(tok) -> None:
    ids, mask = padded([(0, 40), (1, 40)], 40)
    assert padding_share(mask) <= PACK_MIN_PADDING
    calls = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = build_tiny_policy(tok, SMALL, seed=0)

        def forward(self, **kw):
            calls.append(kw["input_ids"].shape)
            return self.inner(**kw)

    forward_logits(Spy(), ids, mask, position_ids_from_mask(mask))
    assert calls == [ids.shape]
