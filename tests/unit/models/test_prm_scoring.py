"""Single-pass PRM scoring equals scoring every step prefix alone (float32, 1e-5), whatever the padding."""

from __future__ import annotations

import pytest
import torch

from tdrm_rl.config import ModelConfig
from tdrm_rl.models.load import build_tiny_policy, load_prm, prm_prefix_step_logits, prm_step_logits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["hidden", "logprob"])
def prm(tok, tmp_path_factory, request):
    path = str(tmp_path_factory.mktemp("policy"))
    build_tiny_policy(tok, ModelConfig(), seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    model, _ = load_prm(path, init_from_policy=True, readout=request.param)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model.score.weight.normal_(0, 0.5)  # a non-trivial head: values differ across positions
    return model.eval()


def ragged_batch(tok, layout: str, steps: list[int], seed: int = 0):
    """Rows of random tokens: prompt + response with `steps[b]` step ends, padded by `layout`.

    layout "split": left-padded prompts, right-padded responses (the Batch layout);
    "left" / "right": whole sequences flush right / flush left.
    """
    gen = torch.Generator().manual_seed(seed)
    vocab = [i for i in range(len(tok)) if i not in set(tok.all_special_ids)]
    rows, ends = [], []
    for n_steps in steps:
        prompt = [vocab[int(i)] for i in torch.randint(len(vocab), (int(torch.randint(3, 12, (1,), generator=gen)),),
                                                        generator=gen)]
        lengths = torch.randint(1, 7, (n_steps,), generator=gen).tolist()
        response = [vocab[int(i)] for i in torch.randint(len(vocab), (sum(lengths) + 2,), generator=gen)]
        rel = torch.tensor(lengths).cumsum(0).sub(1).tolist()  # step-end offsets inside the response
        rows.append((prompt, response))
        ends.append(rel)
    p_width = max(len(p) for p, _ in rows)
    r_width = max(len(r) for _, r in rows)
    width = p_width + r_width + (3 if layout != "split" else 0)  # extra all-pad columns too
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    step_ends = torch.zeros((len(rows), max(steps)), dtype=torch.long)
    step_mask = torch.zeros((len(rows), max(steps)), dtype=torch.bool)
    resp_mask = torch.zeros_like(ids)
    for b, ((prompt, response), rel) in enumerate(zip(rows, ends)):
        seq = prompt + response
        if layout == "split":
            start = p_width - len(prompt)
        elif layout == "left":
            start = width - len(seq)
        else:
            start = 0
        ids[b, start:start + len(seq)] = torch.tensor(seq)
        mask[b, start:start + len(seq)] = 1
        resp_start = start + len(prompt)
        resp_mask[b, resp_start:start + len(seq)] = 1
        step_ends[b, :len(rel)] = torch.tensor(rel) + resp_start
        step_mask[b, :len(rel)] = True
    RESPONSE_MASKS[id(ids)] = resp_mask
    return ids, mask, step_ends, step_mask


RESPONSE_MASKS: dict = {}  # the response mask of each batch ragged_batch built (the logprob read-out needs it)


@pytest.mark.parametrize("layout", ["split", "left", "right"])
def test_single_pass_equals_per_prefix_scoring(tok, prm, layout) -> None:
    steps = [1, 3, 8, 16, 0, 5]  # ragged, including a row with no steps
    ids, mask, step_ends, step_mask = ragged_batch(tok, layout, steps, seed=len(layout))
    assert (mask == 0).any(dim=1).sum() >= len(steps) - 1  # padding is really there
    with torch.no_grad():
        single = prm_step_logits(prm, ids, mask, step_ends, step_mask, RESPONSE_MASKS[id(ids)])
    per_prefix = prm_prefix_step_logits(prm, ids, mask, step_ends, step_mask, RESPONSE_MASKS[id(ids)])
    assert single.dtype == per_prefix.dtype == torch.float32
    assert single.shape == per_prefix.shape == (len(steps), max(steps))
    assert per_prefix[step_mask].std() > 0.05  # the values are not all alike
    assert (single[~step_mask] == 0).all()
    assert (single - per_prefix).abs().max().item() < 1e-5


def test_single_pass_is_independent_of_batch_mates(tok, prm) -> None:
    """A row scores the same alone and padded next to a much longer row."""
    ids, mask, step_ends, step_mask = ragged_batch(tok, "split", [2, 16], seed=3)
    with torch.no_grad():
        resp = RESPONSE_MASKS[id(ids)]
        together = prm_step_logits(prm, ids, mask, step_ends, step_mask, resp)[0, :2]
        keep = mask[0].bool()
        offset = int(keep.nonzero()[0])
        alone = prm_step_logits(prm, ids[:1, keep], mask[:1, keep], step_ends[:1, :2] - offset, step_mask[:1, :2],
                                resp[:1, keep])
    assert (together - alone[0]).abs().max().item() < 1e-5
