"""Tiny policy builder, HF save/load of policy and PRM, and one-pass PRM step logits."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from tdrm_rl.config import ModelConfig
from tdrm_rl.models.load import (build_tiny_policy, load_policy, load_prm, resolve_model_path, position_ids_from_mask, prm_step_logits,
                            set_cpu_defaults)

SMALL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy_dir(tok, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("policy"))
    model = build_tiny_policy(tok, SMALL, seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_build_tiny_policy_default_shape(tok) -> None:
    model = build_tiny_policy(tok, ModelConfig(), seed=0)
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 2e6
    assert model.config.vocab_size == len(tok)
    assert model.config.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert (model.config.pad_token_id, model.config.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_build_is_seeded_and_leaves_global_rng_alone(tok) -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = build_tiny_policy(tok, SMALL, seed=1)
    assert torch.equal(torch.rand(1), expected)
    b = build_tiny_policy(tok, SMALL, seed=1)
    c = build_tiny_policy(tok, SMALL, seed=2)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_load_policy_round_trip(tok, policy_dir) -> None:
    assert os.path.isfile(os.path.join(policy_dir, "model.safetensors"))
    model, loaded_tok = load_policy(policy_dir)
    ref = build_tiny_policy(tok, SMALL, seed=0)
    ids = torch.tensor([tok("Start with 3: +4\n")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-6)
    assert loaded_tok("a\n\nb")["input_ids"] == tok("a\n\nb")["input_ids"]
    assert next(model.parameters()).dtype == torch.float32


def test_load_errors_name_the_path(tmp_path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_policy(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_prm(missing, init_from_policy=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_policy(str(empty))


def test_hub_id_resolves_through_the_hf_cache(policy_dir, tmp_path) -> None:
    """A recipe may name `owner/name`: offline it is read from the HF cache layout, never downloaded."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-math" / "snapshots" / ("0" * 40)
    shutil.copytree(policy_dir, snapshot)
    (cache / "models--acme--tiny-math" / "refs").mkdir()
    (cache / "models--acme--tiny-math" / "refs" / "main").write_text("0" * 40)
    assert resolve_model_path("acme/tiny-math", "policy", hf_cache_dir=str(cache)) == str(snapshot)
    assert resolve_model_path(policy_dir, "policy") == policy_dir
    with pytest.raises(FileNotFoundError, match="'acme/absent' is not a local directory.*Hugging Face cache"):
        resolve_model_path("acme/absent", "policy", hf_cache_dir=str(cache))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        resolve_model_path(str(tmp_path / "a" / "b" / "c"), "policy")


def test_prm_from_policy_backbone_and_fresh_head(tok, policy_dir, tmp_path) -> None:
    prm, prm_tok = load_prm(policy_dir, init_from_policy=True)
    policy, _ = load_policy(policy_dir)
    pol_state = policy.state_dict()
    for name, value in prm.model.state_dict().items():
        assert torch.equal(value, pol_state["model." + name]), name
    assert prm.config.pad_token_id == tok.pad_token_id
    assert torch.count_nonzero(prm.score.bias) == 0
    assert prm.score.weight.abs().max() < 0.01
    assert all(m.p == 0.0 for m in prm.modules() if isinstance(m, torch.nn.Dropout))
    ids = torch.tensor([tok("Start with 3: +4\n3+4=7\n\n\\boxed{7}")["input_ids"]])
    prm.train()  # dropout off even in train mode: two passes agree
    with torch.no_grad():
        v1, v2 = prm(ids).logits, prm(ids).logits
    assert torch.equal(v1, v2)
    assert ((torch.sigmoid(v1) - 0.5).abs() < 0.05).all()
    # A trained head survives save/load (it is not re-initialised when init_from_policy=False).
    with torch.no_grad():
        prm.score.bias.fill_(1.5)
    prm.save_pretrained(tmp_path)
    prm_tok.save_pretrained(tmp_path)
    again, _ = load_prm(str(tmp_path), init_from_policy=False)
    assert torch.allclose(again.score.bias, torch.tensor([1.5]))
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, prm(ids).logits, atol=1e-6)


def _step_batch(tok, prompts: list[str], responses: list[str]):
    """Left-padded prompts + right-padded responses, step ends at each "\\n\\n" and the last token."""
    p_ids = [tok(p)["input_ids"] for p in prompts]
    r_ids = [tok(r)["input_ids"] for r in responses]
    delim = tok.convert_tokens_to_ids(tok.tokenize("\n\n"))[0]
    pw, rw = max(map(len, p_ids)), max(map(len, r_ids))
    ids = torch.full((len(prompts), pw + rw), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    ends, s = [], 0
    for i, (p, r) in enumerate(zip(p_ids, r_ids)):
        ids[i, pw - len(p):pw] = torch.tensor(p)
        ids[i, pw:pw + len(r)] = torch.tensor(r)
        mask[i, pw - len(p):pw + len(r)] = 1
        e = [pw + j for j, t in enumerate(r) if t == delim] + [pw + len(r) - 1]
        ends.append(e)
        s = max(s, len(e))
    step_ends = torch.zeros((len(prompts), s), dtype=torch.long)
    step_mask = torch.zeros((len(prompts), s), dtype=torch.bool)
    for i, e in enumerate(ends):
        step_ends[i, :len(e)] = torch.tensor(e)
        step_mask[i, :len(e)] = True
    return p_ids, r_ids, ids, mask, ends, step_ends, step_mask


def test_prm_step_logits_match_prefix_scoring(tok, policy_dir) -> None:
    prm, _ = load_prm(policy_dir, init_from_policy=True)
    with torch.no_grad():
        prm.score.weight.normal_(0, 1.0)  # a non-trivial head, so values differ across positions
    prompts = ["Start with 3: +4 *2\n", "Start with 11: -2\n"]
    responses = ["3+4=7\n\n7*2=14\n\n\\boxed{14}", "11-2=9\n\n\\boxed{9}"]
    p_ids, r_ids, ids, mask, ends, step_ends, step_mask = _step_batch(tok, prompts, responses)
    logits = prm_step_logits(prm, ids, mask, step_ends, step_mask)
    assert logits.shape == step_ends.shape
    assert logits[1, 2] == 0.0 and not step_mask[1, 2]  # the second row has fewer steps
    pw = ids.shape[1] - max(map(len, r_ids))
    with torch.no_grad():
        for i in range(len(prompts)):
            for k, e in enumerate(ends[i]):
                prefix = p_ids[i] + r_ids[i][:e - pw + 1]  # the state s_k, scored alone, unpadded
                alone = prm(torch.tensor([prefix])).logits[0, -1, 0]
                assert torch.allclose(logits[i, k], alone, atol=1e-4), (i, k)
    # Gradients flow through the single pass.
    logits.sum().backward()
    assert prm.score.weight.grad is not None and prm.score.weight.grad.abs().sum() > 0


def test_position_ids_skip_padding() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 5]]


def test_set_cpu_defaults() -> None:
    old = torch.get_num_threads()
    try:
        torch.set_flush_denormal(False)
        tiny = torch.tensor([1e-30], dtype=torch.float32) * torch.tensor([1e-10], dtype=torch.float32)
        assert tiny.item() != 0.0  # a denormal survives without flushing
        set_cpu_defaults(1)
        assert torch.get_num_threads() == 1
        tiny = torch.tensor([1e-30], dtype=torch.float32) * torch.tensor([1e-10], dtype=torch.float32)
        assert tiny.item() == 0.0
        set_cpu_defaults(0)  # 0 leaves the thread count alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
        torch.set_flush_denormal(True)
