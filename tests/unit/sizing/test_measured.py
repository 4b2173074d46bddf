"""The bytes per token and per logit in tdrm_rl/sizing/memory.py, measured again on CPU with the project's own code:
what autograd keeps for a decoder layer (saved-tensor hooks), and the peak of the policy's chunked LM head and of the
PRM's log-prob read-out, which runs the same chunks (torch.profiler's memory timeline)."""

from __future__ import annotations

import pytest
import torch

from tdrm_rl.sizing.memory import (CHECKPOINT_BYTES_PER_HIDDEN, CHUNK_LOGIT_BYTES_GRAD, CHUNK_LOGIT_BYTES_NOGRAD,
                                   layer_activation_bytes_per_token)
from tdrm_rl.sizing.shapes import shape_from_config

TOKENS = (2, 64)  # batch, length


def tiny(model_type: str, layers: int, vocab: int = 512):
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(vocab_size=vocab, hidden_size=128, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=352, head_dim=32, max_position_embeddings=256,
                  tie_word_embeddings=False, pad_token_id=0)
    config = AutoConfig.for_model(model_type, **fields)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16).train()
    return model, shape_from_config(dict(fields, model_type=model_type), model_type, "test")


def saved_bytes(model, checkpointing: bool) -> int:
    """Bytes autograd keeps for backward in one decoder forward (each storage once, parameters excluded)."""
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    b, n = TOKENS
    ids = torch.randint(1, 500, (b, n))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=ids, position_ids=torch.arange(n).repeat(b, 1))
    return sum(v for k, v in seen.items() if k not in params)


@pytest.mark.parametrize("model_type", ["qwen2", "glm4", "llama"])
def test_a_decoder_layer_keeps_what_the_formula_says(model_type: str) -> None:
    tokens = TOKENS[0] * TOKENS[1]
    two, shape = tiny(model_type, 2)
    four, _ = tiny(model_type, 4)
    per_layer = (saved_bytes(four, False) - saved_bytes(two, False)) / 2 / tokens
    assert per_layer == pytest.approx(layer_activation_bytes_per_token(shape), rel=0.10)
    two_ckpt, _ = tiny(model_type, 2)
    four_ckpt, _ = tiny(model_type, 4)
    kept = (saved_bytes(four_ckpt, True) - saved_bytes(two_ckpt, True)) / 2 / tokens
    assert kept == pytest.approx(CHECKPOINT_BYTES_PER_HIDDEN * shape.hidden, rel=0.05)


def profiled_peak(fn) -> int:
    """Peak bytes of CPU tensors alive at once during `fn()` (above what existed before), by torch.profiler."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, MemoryProfile

    fn()  # warm-up: lazily created buffers do not count
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True) as prof:
        fn()
    current = peak = 0
    for _, action, (key, _), size in MemoryProfile(prof.profiler.kineto_results).timeline:
        if key.device.type == "cpu":
            current += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
            peak = max(peak, current)
    return peak


def test_the_chunked_lm_head_and_the_prm_read_out_peak_as_the_formula_says() -> None:
    from tdrm_rl.models.load import LogprobValueModel
    from tdrm_rl.models.logprobs import token_logprobs

    vocab, chunk = 16000, 256  # a vocabulary large enough that the logits dominate the tiny decoder
    lm, _ = tiny("qwen2", 1, vocab=vocab)
    b, n = TOKENS[0], 4 * TOKENS[1]
    ids = torch.randint(1, vocab, (b, n))
    mask = torch.ones_like(ids)
    grads = sum(p.numel() * 2 for p in lm.parameters())

    def policy_step() -> None:
        lm.zero_grad(set_to_none=True)
        logp, _ = token_logprobs(lm, ids, mask, with_entropy=True, entropy_grad=False, chunk_tokens=chunk)
        logp.sum().backward()

    per_chunk_logit = (profiled_peak(policy_step) - grads) / (chunk * vocab)
    assert per_chunk_logit == pytest.approx(CHUNK_LOGIT_BYTES_GRAD, rel=0.10)
    prm = LogprobValueModel(lm).to(torch.bfloat16)
    prm.chunk_tokens = chunk
    grads = sum(p.numel() * 2 for p in prm.parameters())

    def prm_step() -> None:
        prm.zero_grad(set_to_none=True)
        prm(input_ids=ids, attention_mask=mask).logits.float().sum().backward()

    def prm_values() -> None:
        with torch.no_grad():
            prm(input_ids=ids, attention_mask=mask)

    # The read-out's peak follows the chunk, not the sequence (it held b * (n - 1) * vocab logits at 16 B before).
    assert (profiled_peak(prm_step) - grads) / (chunk * vocab) == pytest.approx(CHUNK_LOGIT_BYTES_GRAD, rel=0.10)
    assert profiled_peak(prm_values) / (chunk * vocab) == pytest.approx(CHUNK_LOGIT_BYTES_NOGRAD, rel=0.10)
