"""Single-pass PRM scoring vs scoring each step prefix alone, at 4, 8 and 16 steps per trajectory."""

from __future__ import annotations

from typing import Any

import torch

from bench.common import Table, median, timed
from tdrm_rl.models.load import load_prm, prm_prefix_step_logits, prm_step_logits


def step_batch(vocab: list[int], pad_id: int, rows: int, steps: int, step_len: int, prompt_len: int,
               seed: int) -> tuple[torch.Tensor, ...]:
    """Left-padded prompts + right-padded responses with ragged step counts (steps/2 .. steps)."""
    gen = torch.Generator().manual_seed(seed)
    counts = [steps] + torch.randint(max(1, steps // 2), steps + 1, (rows - 1,), generator=gen).tolist()
    p_lens = torch.randint(prompt_len // 2, prompt_len + 1, (rows,), generator=gen).tolist()
    width = prompt_len + steps * step_len
    ids = torch.full((rows, width), pad_id)
    mask = torch.zeros_like(ids)
    ends = torch.zeros((rows, steps), dtype=torch.long)
    smask = torch.zeros((rows, steps), dtype=torch.bool)
    pick = torch.tensor(vocab)
    for b, (n, p) in enumerate(zip(counts, p_lens)):
        length = p + n * step_len
        ids[b, prompt_len - p:prompt_len + n * step_len] = pick[torch.randint(len(vocab), (length,), generator=gen)]
        mask[b, prompt_len - p:prompt_len + n * step_len] = 1
        ends[b, :n] = prompt_len + step_len * torch.arange(1, n + 1) - 1
        smask[b, :n] = True
    return ids, mask, ends, smask


def run(policy_path: str, quick: bool) -> tuple[dict[str, Any], list[Table]]:
    model, tok = load_prm(policy_path, init_from_policy=True)
    with torch.no_grad():
        model.score.weight.normal_(0, 0.5)  # a non-trivial head, so values differ by position
    model.eval()
    special = set(tok.all_special_ids)
    vocab = [i for i in range(len(tok)) if i not in special]
    rows, reps = (8, 1) if quick else (16, 3)
    results = []
    table = Table(f"Single-pass vs per-prefix PRM scoring ({rows} trajectories, float32)",
                  ["steps", "tokens/traj", "single-pass s", "per-prefix s", "speedup", "max |dV|", "max |dlogit|",
                   "max |logit|"])
    for steps in (4, 8, 16):
        batch = step_batch(vocab, tok.pad_token_id, rows, steps, step_len=12, prompt_len=24, seed=steps)
        with torch.no_grad():
            prm_step_logits(model, *batch)  # warm-up
            single_t = median([timed(lambda: prm_step_logits(model, *batch))[0] for _ in range(reps)])
            single = prm_step_logits(model, *batch)
        prefix_t, per_prefix = timed(lambda: prm_prefix_step_logits(model, *batch))
        # The values are V = sigmoid(logit); both differences are reported, the target is on the values.
        diff = float((torch.sigmoid(single) - torch.sigmoid(per_prefix))[batch[3]].abs().max())
        logit_diff = float((single - per_prefix).abs().max())
        row = {"steps": steps, "rows": rows, "tokens_per_traj": int(batch[1].sum()) / rows,
               "single_pass_s": single_t, "per_prefix_s": prefix_t, "speedup": prefix_t / single_t,
               "max_abs_diff": diff, "max_abs_logit_diff": logit_diff,
               "max_abs_logit": float(per_prefix.abs().max())}
        results.append(row)
        table.add(steps, row["tokens_per_traj"], single_t, prefix_t, row["speedup"], diff, logit_diff,
                  row["max_abs_logit"])
    at8 = next(r for r in results if r["steps"] == 8)
    target = {"target": "single-pass >= 5x per-prefix at 8 steps, |diff| <= 1e-5 (float32)",
              "measured": f"{at8['speedup']:.1f}x, max |dV| {at8['max_abs_diff']:.1e} "
                          f"(|dlogit| {at8['max_abs_logit_diff']:.1e})",
              "met": at8["speedup"] >= 5.0 and at8["max_abs_diff"] <= 1e-5}
    return {"rows": results, "targets": [target]}, [table]
