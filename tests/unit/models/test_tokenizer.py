"""The char-level tokenizer: exact round trip, the delimiter token, save/load with AutoTokenizer."""

from __future__ import annotations

import random
import string

import pytest
from transformers import AutoTokenizer, Qwen2Config

from tdrm_rl.models.tokenizer import DELIMITER, build_char_tokenizer

ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # Extra newlines so runs of 1, 2, 3, 4 "\n" all occur.
    return ["".join(rng.choice(ALPHABET + "\n\n\n") for _ in range(rng.randint(0, 60))) for _ in range(n)]


def test_one_token_per_char_and_delimiter_is_one_token(tok) -> None:
    text = "12+5=17\n\n17*3=51\n\n\\boxed{51}"
    ids = tok(text)["input_ids"]
    delim = tok.convert_tokens_to_ids(tok.tokenize(DELIMITER))
    assert len(delim) == 1
    assert ids.count(delim[0]) == 2
    assert len(ids) == len(text) - 2  # each "\n\n" is one token, everything else one per char
    assert len(tok("\n\n\n")["input_ids"]) == 2  # "\n\n" + "\n"
    assert len(tok("\n\n\n\n")["input_ids"]) == 2
    assert tok("a b")["input_ids"][1] != tok("a\nb")["input_ids"][1]


def test_round_trip_exact(tok) -> None:
    for text in _random_texts(500) + ["  leading and trailing  ", "\n", "", "\\boxed{ {x} }"]:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
        assert tok.decode(ids + [tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == text


def test_special_tokens(tok) -> None:
    ids = {tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id}
    assert None not in ids and len(ids) == 4
    assert len(tok) < 128  # char-level: small vocabulary
    assert tok.decode([tok.eos_token_id]) == "<eos>"
    assert tok("\u00e9")["input_ids"][0] == tok.unk_token_id  # outside the alphabet
    assert tok("ab")["input_ids"] == [tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b")]


def test_left_padding(tok) -> None:
    enc = tok(["ab", "abcd"], padding=True)
    assert enc["input_ids"][0][:2] == [tok.pad_token_id] * 2
    assert enc["attention_mask"][0] == [0, 0, 1, 1]


@pytest.mark.parametrize("with_qwen2_config", [False, True])
def test_save_and_auto_load(tok, tmp_path, with_qwen2_config: bool) -> None:
    # A policy checkpoint holds a qwen2 config.json, which makes AutoTokenizer rebuild the
    # tokenizer as Qwen2Tokenizer; the ids must not change either way.
    tok.save_pretrained(tmp_path)
    if with_qwen2_config:
        Qwen2Config(vocab_size=len(tok)).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(loaded) == len(tok)
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    for text in _random_texts(300, seed=1):
        ids = tok(text)["input_ids"]
        assert loaded(text)["input_ids"] == ids
        assert loaded.decode(ids) == text
