"""Step segmentation against a char-level brute-force reference on random tokenisations."""

import random
import re
import time

import pytest
import torch

from tdrm_rl.data.segment import gather_at, pad_step_ends, split_steps, step_end_positions

SEEDS = list(range(8))


def ref_step_ends(token_texts, delimiter):
    """Brute force: map every char to its token, split with a regex, check each piece."""
    char_token = [t for t, tok in enumerate(token_texts) for _ in tok]
    text = "".join(token_texts)
    ends, start = [], 0
    for match in re.finditer(re.escape(delimiter), text):
        if text[start : match.start()].strip():
            ends.append(char_token[match.end() - 1])
        start = match.end()
    if text[start:].strip():
        ends.append(max(t for t, tok in enumerate(token_texts) if tok.strip()))
    return ends


def random_tokenisation(seed: int, delimiter: str):
    """Random text rich in delimiters, blank steps and whitespace, cut into random (maybe empty) tokens."""
    rng = random.Random(seed)
    pieces = ["a", "bc", " ", "\n", delimiter, delimiter, "x\n", "\t", "7"]
    text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
    cuts = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(0, 30)))
    bounds = [0] + cuts + [len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("delimiter", ["\n\n", "\n", "<step>"])
def test_step_end_positions_match_brute_force_on_random_tokenisations(seed, delimiter):
    for trial in range(25):
        tokens = random_tokenisation(1000 * seed + trial, delimiter)
        ends = step_end_positions(tokens, delimiter)
        assert ends == ref_step_ends(tokens, delimiter), tokens
        assert len(ends) == len(split_steps("".join(tokens), delimiter))
        assert ends == sorted(ends)


def test_step_end_positions_hand_examples():
    tokens = ["Step", " 1", "\n\n", "Step", " 2", "\n\n", "Answer", ":", " 3"]
    assert step_end_positions(tokens) == [2, 5, 8]
    # delimiter split across tokens: the step ends at the token with its last char
    assert step_end_positions(["a", "\n", "\n", "b", "\n"]) == [2, 3]
    # one token holding several delimiters
    assert step_end_positions(["a\n\nb\n\n", "c"]) == [0, 0, 1]
    # empty steps (leading delimiter, delimiter after delimiter) produce nothing
    assert step_end_positions(["\n\n", "a", "\n\n\n\n", "b"]) == [2, 3]
    # trailing delimiter: no empty final step
    assert step_end_positions(["a", "\n\n"]) == [1]
    # no delimiter: one step ending at the last non-whitespace token
    assert step_end_positions(["hi", " there", " ", "\n"]) == [1]
    # blank or empty responses have no steps
    assert step_end_positions([" ", "\n\n", " "]) == []
    assert step_end_positions([]) == []


def test_step_end_positions_max_steps_keeps_final_step():
    tokens = ["s1", "\n\n", "s2", "\n\n", "s3", "\n\n", "s4", "\n\n", "ans"]
    assert step_end_positions(tokens) == [1, 3, 5, 7, 8]
    assert step_end_positions(tokens, max_steps=3) == [1, 3, 8]
    assert step_end_positions(tokens, max_steps=1) == [8]
    assert step_end_positions(tokens, max_steps=5) == [1, 3, 5, 7, 8]
    with pytest.raises(ValueError, match="max_steps"):
        step_end_positions(tokens, max_steps=0)


def test_step_end_positions_is_linear_time():
    tokens = ["word", " ", "\n", "\n"] * 50_000 + ["end"]
    start = time.perf_counter()
    ends = step_end_positions(tokens)
    assert time.perf_counter() - start < 2.0
    assert len(ends) == 50_001 and ends[0] == 3 and ends[-1] == len(tokens) - 1


def test_empty_delimiter_is_rejected():
    with pytest.raises(ValueError, match="delimiter"):
        step_end_positions(["a"], delimiter="")
    with pytest.raises(ValueError, match="delimiter"):
        split_steps("a", delimiter="")


def test_split_steps_strips_and_drops_empty_steps():
    assert split_steps("a\n\n\n\nb\n\n ") == ["a", "b"]
    assert split_steps("  first step \n\nsecond\nline\n\nanswer: 3") == ["first step", "second\nline", "answer: 3"]
    assert split_steps(" \n\n ") == []
    assert split_steps("one|two||three", delimiter="|") == ["one", "two", "three"]


def ref_pad(rows, offsets, S):
    ends = torch.zeros(len(rows), S, dtype=torch.long)
    mask = torch.zeros(len(rows), S)
    for b, row in enumerate(rows):
        for i, e in enumerate(row):
            ends[b, i] = e + offsets[b]
            mask[b, i] = 1.0
    return ends, mask


@pytest.mark.parametrize("seed", SEEDS)
def test_pad_step_ends_matches_loop_reference(seed):
    rng = random.Random(seed)
    rows = [sorted(rng.sample(range(40), rng.randint(0, 7))) for _ in range(rng.randint(1, 9))]
    offsets = [rng.randint(0, 20) for _ in rows]
    S = max([1] + [len(r) for r in rows])
    for offset in (offsets, torch.tensor(offsets)):
        ends, mask = pad_step_ends(rows, offset)
        want_ends, want_mask = ref_pad(rows, offsets, S)
        assert ends.dtype == torch.long and mask.dtype == torch.float32
        assert torch.equal(ends, want_ends) and torch.equal(mask, want_mask)
    ends, _ = pad_step_ends(rows, 5)
    assert torch.equal(ends, ref_pad(rows, [5] * len(rows), S)[0])


def test_pad_step_ends_max_steps_cuts_long_rows_but_keeps_final_end():
    ends, mask = pad_step_ends([[1, 4, 6, 9], [2]], offset=[10, 0], max_steps=3)
    assert ends.tolist() == [[11, 14, 19], [2, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    # a generous cap does not widen the batch beyond its longest row
    ends, mask = pad_step_ends([[1, 4], [2]], max_steps=64)
    assert ends.shape == (2, 2) and mask.tolist() == [[1, 1], [1, 0]]


def test_pad_step_ends_all_empty_rows_and_bad_offset():
    ends, mask = pad_step_ends([[], []])
    assert ends.shape == (2, 1) and mask.sum().item() == 0
    with pytest.raises(ValueError, match="offset"):
        pad_step_ends([[1], [2]], offset=[1, 2, 3])


@pytest.mark.parametrize("seed", SEEDS)
def test_gather_at_matches_loop_reference(seed):
    rng = random.Random(seed)
    L = 30
    rows = [sorted(rng.sample(range(L - 5), rng.randint(0, 6))) for _ in range(6)]
    ends, mask = pad_step_ends(rows, offset=[rng.randint(0, 5) for _ in rows])
    per_token = torch.randn(6, L, generator=torch.Generator().manual_seed(seed))
    got = gather_at(per_token, ends, mask)
    want = torch.zeros(ends.shape)
    for b in range(6):
        for i in range(ends.shape[1]):
            if mask[b, i]:
                want[b, i] = per_token[b, ends[b, i]]
    assert torch.equal(got, want)


def test_gather_at_rejects_step_end_outside_sequence():
    per_token = torch.zeros(1, 4)
    with pytest.raises(IndexError, match="outside"):
        gather_at(per_token, torch.tensor([[1, 4]]), torch.tensor([[1.0, 1.0]]))
    # an out-of-range index under the padding mask is fine
    assert gather_at(per_token, torch.tensor([[1, 99]]), torch.tensor([[1.0, 0.0]])).tolist() == [[0.0, 0.0]]
