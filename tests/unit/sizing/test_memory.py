"""The memory arithmetic against cases worked by hand (bytes)."""

from __future__ import annotations

import pytest

from tdrm_rl.sizing.memory import (GiB, Term, Usage, chunked_logits, decoder_activations,
                                   kv_cache_bytes, optimizer_step, vllm_engine, zero_buffers, zero_states)
from tdrm_rl.sizing.shapes import ModelShape

# hidden 100, 10 layers, 4 query heads and 2 KV heads of 25, MLP 300, vocab 1000, untied (Qwen2 biases).
SHAPE = ModelShape(name="hand", model_type="qwen2", hidden=100, layers=10, heads=4, kv_heads=2, head_dim=25,
                   intermediate=300, vocab=1000, tied=False, max_positions=4096, qkv_bias=True, o_bias=False,
                   mlp_bias=False, norms_per_layer=2, dtype_bytes=2, source="test")


def by_name(terms: list[Term]) -> dict[str, float]:
    return {t.name: t.bytes for t in terms}


def test_parameter_count_by_hand() -> None:
    # q, k, v, o: 100x100 + 2 x 100x50 + 100x100 = 30,000, biases 100 + 2 x 50 = 200, MLP 3 x 100 x 300 = 90,000,
    # two norms 200: 120,400 per layer; embeddings and head 2 x 1000 x 100; final norm 100.
    assert SHAPE.layer_params() == 120_400
    assert SHAPE.params() == 10 * 120_400 + 200_000 + 100
    assert SHAPE.kv_bytes_per_token(2) == 2 * 10 * 50 * 2


@pytest.mark.parametrize("stage,world,expected", [
    (3, 4, {"weights": 0.5e9, "gradients": 0.5e9, "optimizer": 3e9}),  # everything divided by 4
    (2, 2, {"weights": 2e9, "gradients": 1e9, "optimizer": 6e9}),  # weights whole, gradients and states halved
    (1, 2, {"weights": 2e9, "gradients": 2e9, "optimizer": 6e9}),
    (0, 2, {"weights": 2e9, "gradients": 2e9, "optimizer": 12e9}),  # nothing partitioned
])
def test_zero_states_of_a_billion_parameters(stage: int, world: int, expected: dict[str, float]) -> None:
    assert by_name(zero_states(1_000_000_000, stage, world)) == pytest.approx(expected)


def test_optimizer_step_buffers_follow_the_partition_and_zero3_sub_groups() -> None:
    assert by_name(optimizer_step(1_000_000_000, 2, 2))["step buffers"] == 8 * 0.5e9
    # ZeRO-3 steps 1e9-element sub-groups one at a time: 4e9 params over 2 ranks = 2e9 -> one sub-group of 1e9.
    assert by_name(optimizer_step(4_000_000_000, 3, 2))["step buffers"] == 8 * 1e9


def test_zero_buffers() -> None:
    assert zero_buffers(SHAPE, 1) == []
    assert by_name(zero_buffers(SHAPE, 2)) == {"reduce bucket": 1e9}
    # the largest tensor is the 1000 x 100 embedding; gathered twice (it and its gradient) plus the prefetch bucket
    assert by_name(zero_buffers(SHAPE, 3))["gathered params"] == 2 * 2 * (100_000 + 50_000_000)


def test_activations_with_and_without_checkpointing() -> None:
    # per layer and token: 2 norms x 6 x 100 + 8 x 100 (q) + 4 x 50 (kv) + 8 x 300 (MLP) = 4,600 B;
    # the final norm and the gradient coming down: 6 x 100 + 8 x 100 = 1,400 B.
    assert decoder_activations(SHAPE, 1000, checkpointing=False).bytes == 1000 * (10 * 4600 + 1400)
    # checkpointing keeps each layer's 2 B x 100 input and recomputes one layer
    assert decoder_activations(SHAPE, 1000, checkpointing=True).bytes == 1000 * (10 * 200 + 4600 + 1400)


def test_logits_are_one_lm_head_chunk_for_the_policy_and_the_prm() -> None:
    assert chunked_logits(SHAPE, 3000, 1024, grad=True).bytes == 20 * 1024 * 1000
    assert chunked_logits(SHAPE, 500, 1024, grad=True).bytes == 20 * 500 * 1000
    assert chunked_logits(SHAPE, 3000, 1024, grad=False).bytes == 8 * 1024 * 1000


def test_vllm_kv_cache_is_what_is_left_of_its_share() -> None:
    engine = vllm_engine(SHAPE, utilization=0.5, gpu_bytes=80 * GiB, tp=1, dtype_bytes=2)
    weights = 2 * SHAPE.params()
    # an 80 GB GPU: 16384 batched tokens x (6 x 300 + 8 x 100) + the sampler's 1024 x 1000 logits x 12 B
    activations = 16384 * (6 * 300 + 8 * 100) + 1024 * 1000 * 12
    assert kv_cache_bytes(engine) == pytest.approx(40 * GiB - weights - activations - 1.5 * GiB)
    assert engine.peak() == 40 * GiB  # the share is fixed, whatever the model needs
    tp2 = vllm_engine(SHAPE, utilization=0.5, gpu_bytes=80 * GiB, tp=2, dtype_bytes=2)
    assert by_name(tp2.breakdown)["weights"] == weights / 2


def test_a_process_peaks_at_its_resident_state_plus_its_largest_phase() -> None:
    usage = Usage("x", resident=[Term("a", 10.0, "")], phases={"small": [Term("b", 5.0, "")],
                                                               "big": [Term("c", 4.0, ""), Term("d", 3.0, "")]},
                  fixed=1.0)
    assert usage.peak_phase() == "big"
    assert usage.peak() == pytest.approx(10 + 7 * 1.1 + 1)
