import torch

from tdrm_rl.data.batch import Batch
from tdrm_rl.data.collate import TokenTexts, collate
from tdrm_rl.models.tokenizer import build_char_tokenizer


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_collate_left_pads_prompts_and_marks_step_end_tokens():
    tok = build_char_tokenizer()
    prompts = [encode(tok, "Q: 1+2?\n"), encode(tok, "Q: 10+20?\n")]
    responses = [encode(tok, "1 + 2 = 3\n\n\\boxed{3}") + [tok.eos_token_id],
                 encode(tok, "10 + 20 = 30\n\n30 * 1 = 30\n\n\\boxed{30}") + [tok.eos_token_id]]
    batch = collate(prompts, responses, [0, 1], TokenTexts(tok), pad_id=tok.pad_token_id,
                    rollout_logprobs=[[-0.5] * len(r) for r in responses], meta={"answer": ["3", "30"]})
    P = batch.prompt_len
    assert P == max(len(p) for p in prompts)
    # Prompt ends at the same column for every row; responses start right after it.
    assert batch.input_ids[0, P - len(prompts[0]):P].tolist() == prompts[0]
    assert batch.attention_mask[0, :P - len(prompts[0])].sum() == 0
    assert batch.input_ids[1, P:P + len(responses[1])].tolist() == responses[1]
    assert batch.response_mask.sum(1).tolist() == [len(r) for r in responses]
    assert batch.rollout_logprobs[0, P:P + len(responses[0])].eq(-0.5).all()
    # Step ends: the delimiter token of each non-final step, the last non-special token of the final step.
    assert batch.step_mask.sum(1).tolist() == [2, 3]
    for row, text in enumerate(["1 + 2 = 3\n\n\\boxed{3}", "10 + 20 = 30\n\n30 * 1 = 30\n\n\\boxed{30}"]):
        ends = batch.step_ends[row, : int(batch.step_mask[row].sum())].tolist()
        pieces = [tok.decode([t]) for t in batch.input_ids[row].tolist()]
        assert [pieces[e] for e in ends[:-1]] == ["\n\n"] * (len(ends) - 1)
        assert pieces[ends[-1]] == "}"
        assert "".join(pieces[P:ends[-1] + 1]) == text


def test_batch_select_chunk_concat_roundtrip():
    tok = build_char_tokenizer()
    prompts = [encode(tok, "Q%d\n" % i) for i in range(5)]
    responses = [encode(tok, "x" * (i + 1)) for i in range(5)]
    batch = collate(prompts, responses, list(range(5)), TokenTexts(tok), pad_id=tok.pad_token_id,
                    meta={"i": list(range(5))})
    batch.outcome = torch.arange(5).float()
    parts = batch.chunk(2)
    assert [len(p) for p in parts] == [2, 2, 1]
    back = Batch.concat(parts, pad_id=tok.pad_token_id)
    assert torch.equal(back.input_ids, batch.input_ids)
    assert torch.equal(back.outcome, batch.outcome)
    assert back.meta["i"] == list(range(5))
    picked = batch.select([4, 0])
    assert picked.meta["i"] == [4, 0] and picked.outcome.tolist() == [4.0, 0.0]
    trimmed = picked.select([1]).trim()
    assert trimmed.input_ids.shape[1] == batch.prompt_len + 1
