"""A small hand-laid batch shared by the algos tests (prompt_len 2, L 8)."""

import torch

from tdrm_rl.data.batch import Batch


def make_batch(resp_lens, step_ends, group_ids, outcome, step_logits=None, length=8, prompt_len=2):
    B = len(resp_lens)
    S = max(len(e) for e in step_ends)
    response_mask = torch.zeros(B, length)
    ends = torch.zeros(B, S, dtype=torch.long)
    mask = torch.zeros(B, S)
    for b, (n, e) in enumerate(zip(resp_lens, step_ends)):
        response_mask[b, prompt_len:prompt_len + n] = 1.0
        ends[b, :len(e)] = torch.tensor(e)
        mask[b, :len(e)] = 1.0
    logits = None
    if step_logits is not None:
        logits = torch.zeros(B, S)
        for b, row in enumerate(step_logits):
            logits[b, :len(row)] = torch.tensor(row, dtype=torch.float32)
    attention = (response_mask > 0).long()
    attention[:, :prompt_len] = 1
    return Batch(input_ids=torch.zeros(B, length, dtype=torch.long), attention_mask=attention,
                 response_mask=response_mask, step_ends=ends, step_mask=mask,
                 group_ids=torch.tensor(group_ids), prompt_len=prompt_len,
                 outcome=torch.tensor(outcome, dtype=torch.float32), step_logits=logits)
