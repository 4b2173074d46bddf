"""Prompt token ids (review F11): a chat template that writes the BOS into the text must not get a second one
from the tokenizer; a plain prompt keeps the BOS its tokenizer adds; a tokenizer that adds nothing is unchanged."""

from __future__ import annotations

import pytest
import torch

from tdrm_rl.config import load_config
from tdrm_rl.models.generation import generate
from tdrm_rl.models.load import build_tiny_policy
from tdrm_rl.models.tokenizer import build_char_tokenizer, encode_prompts, special_prefix
from tdrm_rl.tasks.prompts import render_prompt
from tests.conftest import bos_char_tokenizer

GLM_PREFIX = ("[gMASK]", "<sop>")


def test_the_probe_tokenizer_reproduces_the_double_bos():
    tok = bos_char_tokenizer()
    text = render_prompt(tok, "What is 2+3?")
    assert text.startswith("<bos>")
    assert tok(text)["input_ids"][:2] == [tok.bos_token_id] * 2  # what both backends tokenised before


@pytest.mark.parametrize("prefix", [("<bos>",), GLM_PREFIX])
def test_a_templated_prompt_starts_with_the_prefix_once(prefix):
    tok = bos_char_tokenizer(prefix)
    prefix_ids = tok.convert_tokens_to_ids(list(prefix))
    assert special_prefix(tok) == prefix_ids
    templated = render_prompt(tok, "What is 2+3?")
    plain = "Problem: 2+3\n"
    ids_templated, ids_plain = encode_prompts(tok, [templated, plain])
    assert ids_templated[:len(prefix)] == prefix_ids and ids_templated[len(prefix):len(prefix) + 1] != prefix_ids[:1]
    assert tok.decode(ids_templated) == templated
    # A plain prompt gets the tokenizer's own prefix, then exactly its text; no suffix special is appended.
    assert ids_plain == prefix_ids + tok(plain, add_special_tokens=False)["input_ids"]


def test_a_tokenizer_that_adds_nothing_keeps_its_ids():
    tok = build_char_tokenizer()
    assert special_prefix(tok) == []
    texts = ["Start with 3: +4\n", "<bos>already"]
    assert encode_prompts(tok, texts) == tok(texts, add_special_tokens=False)["input_ids"]


def test_hf_generation_sends_one_bos_per_templated_prompt():
    tok = bos_char_tokenizer()
    model = build_tiny_policy(tok, load_config(None, []).model, seed=0)
    prompts = [render_prompt(tok, "What is 2+3?"), render_prompt(tok, "And 12*3?")]
    out = generate(model, tok, prompts, 2, temperature=0.0, max_new_tokens=4)
    assert [row.count(tok.bos_token_id) for row in out.prompt_ids] == [1, 1, 1, 1]
    assert out.prompt_ids[0] == encode_prompts(tok, prompts[:1])[0]
    assert all(row[0] == tok.bos_token_id for row in out.prompt_ids)
    # The unequal prompt lengths were left-padded and the padding dropped again.
    assert len(out.prompt_ids[0]) != len(out.prompt_ids[2]) and torch.tensor(out.prompt_ids[2]).ne(tok.pad_token_id).all()
