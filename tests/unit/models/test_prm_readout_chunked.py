"""The logprob PRM read-out's chunked LM head (LogprobValueModel) equals the plain whole-sequence computation
(float32 [B, L-1, V] logits, log-softmax, gather) in the step logits AND in every parameter's gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tdrm_rl.config import ModelConfig
from tdrm_rl.models.load import LogprobValueModel, build_tiny_policy, prm_step_logits

pytestmark = pytest.mark.usefixtures("one_thread")


class PlainReadout(LogprobValueModel):
    """The read-out as it was: whole-sequence float32 logits, kept for backward."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, **_):
        from transformers.modeling_outputs import TokenClassifierOutput

        hidden = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    use_cache=False).last_hidden_state
        value = self.score(hidden)
        logits = self.lm.get_output_embeddings()(hidden)[:, :-1].float()  # [B, L-1, V]
        logp_next = F.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        scaled = F.softplus(self.logprob_scale_raw) * F.pad(logp_next, (0, 1))
        return TokenClassifierOutput(logits=torch.cat([value, scaled[..., None].to(value.dtype)], -1))


@pytest.fixture(scope="module")
def models(tok):
    lm = build_tiny_policy(tok, ModelConfig(), seed=0)
    chunked = LogprobValueModel(lm)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        chunked.score.weight.normal_(0, 0.5)
        chunked.logprob_scale_raw.fill_(0.3)
    chunked.chunk_tokens = 7  # several chunks per row, one split across rows
    plain = PlainReadout(lm)
    plain.load_state_dict(chunked.state_dict())
    return chunked.train(), plain.train()


def batch(tok, padded: bool):
    """Prompt (8 tokens) + response (13 tokens) rows; with `padded`, ragged lengths so the forward packs."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, len(tok), (4, 21), generator=gen)
    mask = torch.ones_like(ids)
    response = torch.zeros_like(ids)
    response[:, 8:] = 1
    if padded:
        for b, pad in enumerate((0, 6, 3, 9)):
            mask[b, 21 - pad:] = 0
            response[b, 21 - pad:] = 0
    step_ends = torch.tensor([[9, 14, 20 - p] for p in ((0, 6, 3, 9) if padded else (0,) * 4)])
    step_mask = torch.ones_like(step_ends, dtype=torch.bool)
    step_mask[3, 2] = False
    return ids, mask, step_ends, step_mask, response


@pytest.mark.parametrize("padded", [False, True])
def test_chunked_readout_gives_the_plain_step_logits_and_gradients(tok, models, padded):
    chunked, plain = models
    ids, mask, step_ends, step_mask, response = batch(tok, padded)
    weights = torch.rand(step_ends.shape, generator=torch.Generator().manual_seed(4))

    def run(model):
        model.zero_grad(set_to_none=True)
        logits = prm_step_logits(model, ids, mask, step_ends, step_mask, response)
        (logits * weights).sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    got, got_grads = run(chunked)
    want, want_grads = run(plain)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    assert {"logprob_scale_raw", "score.weight", "lm.lm_head.weight"} <= got_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_chunked_readout_never_holds_whole_sequence_logits(tok, models):
    """No [B, L-1, V] tensor is ever built: every float32 logits block has at most chunk_tokens rows."""
    chunked, _ = models
    ids, mask, step_ends, step_mask, response = batch(tok, padded=False)
    vocab = chunked.lm.get_output_embeddings().out_features
    seen = []
    head = chunked.lm.get_output_embeddings()
    hook = head.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    try:
        prm_step_logits(chunked, ids, mask, step_ends, step_mask, response).sum().backward()
    finally:
        hook.remove()
    assert seen and all(s[-1] == vocab and s[0] <= chunked.chunk_tokens and len(s) == 2 for s in seen)
