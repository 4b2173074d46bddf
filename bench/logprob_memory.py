"""Peak memory of the policy's logprob + backward at a real vocabulary size, full logits vs chunked LM head, and the
same for the PRM's logprob read-out (step logits + backward; LogprobValueModel before and after it took the chunks).

Each variant runs in a fresh subprocess and reports its peak RSS growth (CPU), so the two are measured alike.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from typing import Any

from bench.common import Table
from tdrm_rl.models.logprobs import CHUNK_TOKENS

ROWS, LENGTH, VOCAB = 8, 1024, 32768


def _plain_prm_logits(prm, ids, mask, step_ends, step_mask, response):
    """The logprob read-out as it was: whole-sequence [B, L-1, V] float32 logits, kept for backward."""
    import torch
    import torch.nn.functional as F

    from tdrm_rl.models.load import combine_readout

    hidden = prm.lm.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    logits = prm.lm.get_output_embeddings()(hidden)[:, :-1].float()
    logp_next = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
    scaled = F.softplus(prm.logprob_scale_raw) * F.pad(logp_next, (0, 1))
    token_logits = combine_readout(torch.cat([prm.score(hidden), scaled[..., None]], -1), response)
    return torch.gather(token_logits, 1, step_ends) * step_mask


def _child(mode: str) -> None:
    import torch
    import torch.nn.functional as F
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tdrm_rl.models.load import position_ids_from_mask
    from tdrm_rl.models.logprobs import token_logprobs
    from tdrm_rl.models.packing import forward_logits

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=128, max_position_embeddings=LENGTH,
                      tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg)
    ids = torch.randint(0, VOCAB, (ROWS, LENGTH))
    mask = torch.ones_like(ids)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode.startswith("prm_"):
        from tdrm_rl.models.load import LogprobValueModel, prm_step_logits

        prm = LogprobValueModel(model)
        response = torch.zeros_like(ids)
        response[:, LENGTH // 8:] = 1
        step_ends = torch.arange(LENGTH // 8 + 63, LENGTH, 64).repeat(ROWS, 1)
        step_mask = torch.ones_like(step_ends)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        read = _plain_prm_logits if mode == "prm_full" else prm_step_logits
        logits = read(prm, ids, mask, step_ends, step_mask, response)
        logits.sum().backward()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"mode": mode, "peak_growth_mb": (peak - base) / 1024, "logit_sum": float(logits.sum()),
                          "scale_grad": float(prm.logprob_scale_raw.grad.sum())}))
        return
    if mode == "full":
        logits = forward_logits(model, ids, mask, position_ids_from_mask(mask))[:, :-1].float()
        logp = F.log_softmax(logits, dim=-1)
        picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
    else:
        picked, entropy = token_logprobs(model, ids, mask, with_entropy=True)
    picked.sum().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "peak_growth_mb": (peak - base) / 1024, "entropy_mean": float(entropy.mean())}))


def run(quick: bool = False) -> tuple[dict[str, Any], list[Table]]:
    out: dict[str, Any] = {}
    for mode in ("full", "chunked", "prm_full", "prm_chunked"):
        proc = subprocess.run([sys.executable, "-m", "bench.logprob_memory", mode], capture_output=True, text=True,
                              check=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["tokens_x_vocab"] = ROWS * (LENGTH - 1) * VOCAB
    out["ratio_full_over_chunked"] = out["full"]["peak_growth_mb"] / max(out["chunked"]["peak_growth_mb"], 1e-9)
    table = Table(f"Policy logprobs + entropy + backward, {ROWS} x {LENGTH} tokens, vocab {VOCAB} (peak RSS growth)",
                  ["LM head", "peak MB", "full / chunked"])
    table.add("full float32 logits", out["full"]["peak_growth_mb"], "")
    table.add(f"chunked ({CHUNK_TOKENS} tokens, recomputed in backward)", out["chunked"]["peak_growth_mb"],
              out["ratio_full_over_chunked"])
    full, chunked = out["prm_full"], out["prm_chunked"]
    out["prm_ratio_full_over_chunked"] = full["peak_growth_mb"] / max(chunked["peak_growth_mb"], 1e-9)
    out["prm_same_numbers"] = (abs(full["logit_sum"] - chunked["logit_sum"]) <= 1e-3 * abs(full["logit_sum"])
                               and abs(full["scale_grad"] - chunked["scale_grad"]) <= 1e-3 * abs(full["scale_grad"]))
    prm = Table(f"PRM logprob read-out: step logits + backward, {ROWS} x {LENGTH} tokens, vocab {VOCAB} "
                "(peak RSS growth)", ["LM head", "peak MB", "full / chunked", "same logits and a-gradient"])
    prm.add("whole-sequence float32 logits (before)", full["peak_growth_mb"], "", "")
    prm.add(f"chunked ({CHUNK_TOKENS} tokens, recomputed in backward)", chunked["peak_growth_mb"],
            out["prm_ratio_full_over_chunked"], "yes" if out["prm_same_numbers"] else "NO")
    return out, [table, prm]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("full", "chunked", "prm_full", "prm_chunked"):
        _child(sys.argv[1])
    else:
        data, tables = run()
        for t in tables:
            print(t.text())
