"""Batched HF generation: ordering, EOS handling, sampling knobs and logprobs vs a forward pass."""

from __future__ import annotations

import math

import pytest
import torch

from tdrm_rl.config import ModelConfig
from tdrm_rl.models.generation import Generated, accuracy, generate
from tdrm_rl.models.load import build_tiny_policy, position_ids_from_mask
from tdrm_rl.tasks.arith import ArithTask

SMALL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
PROMPTS = ["Start with 3: +4\n", "Start with 11: -2 *3\n", "x\n"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = build_tiny_policy(tok, SMALL, seed=0)
    with torch.no_grad():  # sharper logits than the init, so greedy/sampled outputs differ visibly
        m.lm_head.weight.mul_(30.0)
    return m


@pytest.fixture(scope="module")
def uniform_model(tok):
    """Every next token equally likely: EOS shows up at random places in a long sample."""
    m = build_tiny_policy(tok, SMALL, seed=0)
    with torch.no_grad():
        m.lm_head.weight.zero_()
    return m


def _forward_logprobs(model, tok, gen: Generated) -> list[list[float]]:
    """Trainer-style pass: left-padded prompt + right-padded response, explicit position ids."""
    pw = max(map(len, gen.prompt_ids))
    rw = max(map(len, gen.response_ids))
    ids = torch.full((len(gen), pw + rw), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, (p, r) in enumerate(zip(gen.prompt_ids, gen.response_ids)):
        ids[i, pw - len(p):pw] = torch.tensor(p)
        ids[i, pw:pw + len(r)] = torch.tensor(r)
        mask[i, pw - len(p):pw + len(r)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    lp = torch.log_softmax(logits[:, pw - 1:-1].float(), -1).gather(-1, ids[:, pw:].unsqueeze(-1)).squeeze(-1)
    return [lp[i, :len(r)].tolist() for i, r in enumerate(gen.response_ids)]


def test_layout_and_prompt_major_order(model, tok) -> None:
    gen = generate(model, tok, PROMPTS, n=3, temperature=1.0, max_new_tokens=12, micro_batch_size=4)
    assert len(gen) == 9 == len(gen.prompt_ids) == len(gen.response_text) == len(gen.response_logprobs)
    for i, prompt in enumerate(PROMPTS):
        for j in range(3):
            assert gen.prompt_ids[i * 3 + j] == tok(prompt)["input_ids"]
    for ids, text, lp in zip(gen.response_ids, gen.response_text, gen.response_logprobs):
        assert len(ids) == len(lp) <= 12
        assert text == tok.decode(ids, skip_special_tokens=True)
        assert all(x <= 0.0 for x in lp)
    assert tok.padding_side == "left"


def test_logprobs_match_a_forward_pass(model, tok) -> None:
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.9)):
        gen = generate(model, tok, PROMPTS, n=2, temperature=temperature, top_p=top_p, max_new_tokens=16)
        ref = _forward_logprobs(model, tok, gen)
        for got, want in zip(gen.response_logprobs, ref):
            assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4)


def test_greedy_is_argmax_and_deterministic(model, tok) -> None:
    a = generate(model, tok, PROMPTS, n=2, temperature=0.0, max_new_tokens=16)
    b = generate(model, tok, PROMPTS, n=1, temperature=0.0, max_new_tokens=16, micro_batch_size=1)
    assert a.response_ids[0::2] == b.response_ids and a.response_ids[1::2] == b.response_ids
    # Each greedy token is the most likely one under the model.
    pw = max(map(len, a.prompt_ids))
    for p, r in zip(a.prompt_ids, a.response_ids):
        with torch.no_grad():
            logits = model(torch.tensor([p + r])).logits[0, len(p) - 1:-1]
        assert logits.argmax(-1).tolist() == r[:len(logits)]
    assert pw > 0
    # A tiny top_p keeps only the top token: sampling then equals greedy.
    c = generate(model, tok, PROMPTS, n=1, temperature=1.0, top_p=1e-6, max_new_tokens=16)
    assert c.response_ids == b.response_ids


def test_sampling_uses_the_full_distribution(uniform_model, tok) -> None:
    torch.manual_seed(0)
    gen = generate(uniform_model, tok, ["a\n"], n=64, temperature=1.0, max_new_tokens=8, stop_at_eos=False)
    seen = {t for r in gen.response_ids for t in r}
    assert len(seen) > 60  # HF's default top_k=50 would cap this at 50
    expected = -math.log(len(tok))
    assert all(abs(x - expected) < 1e-4 for lp in gen.response_logprobs for x in lp)


def test_eos_truncation(uniform_model, tok) -> None:
    torch.manual_seed(1)
    gen = generate(uniform_model, tok, ["a\n", "bc\n"], n=32, temperature=1.0, max_new_tokens=96)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    ended = [r for r in gen.response_ids if eos in r]
    assert 10 < len(ended) < len(gen)  # P(EOS within 96 tokens) is ~0.6 here
    for r, text in zip(gen.response_ids, gen.response_text):
        if eos in r:
            assert r.index(eos) == len(r) - 1  # cut right after the first EOS, EOS kept
        else:
            assert len(r) == 96
        assert "<eos>" not in text and "<pad>" not in text
        assert pad not in r[:-1] or r.index(pad) < len(r) - 1  # pads are only ever sampled tokens
    torch.manual_seed(1)
    full = generate(uniform_model, tok, ["a\n", "bc\n"], n=32, temperature=1.0, max_new_tokens=96,
                    stop_at_eos=False)
    assert all(len(r) == 96 for r in full.response_ids)
    early = [r for r in full.response_ids if eos in r[:80]]
    assert early
    # Sampling went on after the EOS (a stopped row would be all padding from there).
    assert all(any(t != pad for t in r[r.index(eos) + 1:]) for r in early)


def test_accuracy() -> None:
    task = ArithTask(num_ops=2, operand_max=9)
    problems = task.eval_problems(4)
    texts = []
    for i, p in enumerate(problems):
        texts += [p.solution, p.solution if i % 2 == 0 else "\\boxed{-1}"]
    gen = Generated(prompt_ids=[[0]] * 8, response_ids=[[0]] * 8, response_text=texts,
                    response_logprobs=[[0.0]] * 8)
    assert accuracy(task, problems, gen, n=2) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        accuracy(task, problems, gen, n=1)


def test_stop_strings_end_each_response_after_the_first_hit(uniform_model, tok) -> None:
    """Step-level search generates one step at a time: the response ends right after the stop string."""
    torch.manual_seed(2)
    gen = generate(uniform_model, tok, ["a\n", "bc\n"], n=32, temperature=1.0, max_new_tokens=60,
                   stop=["a", "\n\n"], stop_at_eos=False)
    torch.manual_seed(2)
    full = generate(uniform_model, tok, ["a\n", "bc\n"], n=32, temperature=1.0, max_new_tokens=60,
                    stop_at_eos=False)
    stopped = 0
    for r, text, lp, ref in zip(gen.response_ids, gen.response_text, gen.response_logprobs, full.response_ids):
        assert len(lp) == len(r)
        hits = [i + len(s) for s in ("a", "\n\n") if (i := text.find(s)) >= 0]
        if hits:
            stopped += 1
            assert min(hits) == len(text)  # the first stop string ends the text, and is kept
        else:
            assert len(r) == 60
        assert r == ref[:len(r)]  # the same samples as without stop strings, cut short
    assert stopped > 32  # 'a' alone has probability ~1/100 per token: most of 64 rows hit within 60
    with pytest.raises(ValueError, match="stop strings"):
        generate(uniform_model, tok, ["a\n"], n=1, stop=[""])
