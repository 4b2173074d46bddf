"""Peak memory of the policy's logprob + backward at a real vocabulary size, full logits vs chunked LM head.

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
    for mode in ("full", "chunked"):
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
    return out, [table]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("full", "chunked"):
        _child(sys.argv[1])
    else:
        data, tables = run()
        print(tables[0].text())
