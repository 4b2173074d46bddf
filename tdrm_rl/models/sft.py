"""Warm start (`tdrm-rl sft`): supervised training of the embedded tiny policy on worked solutions.

RL needs a policy that already solves a fair share of problems (so GRPO groups carry signal)
but not all of them (so RL has room to improve). The defaults in config.py are tuned so that
this runs in ~2.5 minutes on 2 CPU cores and lands at roughly 55-75% greedy accuracy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tdrm_rl.data.atomic import atomic_dir
from tdrm_rl.config import RunConfig
from tdrm_rl.models.generation import accuracy, generate
from tdrm_rl.models.load import build_tiny_policy, set_cpu_defaults
from tdrm_rl.tasks import get_task
from tdrm_rl.models.tokenizer import build_char_tokenizer

# Bump when the SFT recipe (code, not config) changes, so stale caches are not reused.
SFT_CACHE_VERSION = 1
METRICS_FILE = "sft_metrics.json"
_MODEL_SHAPE_FIELDS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                       "max_position_embeddings")


# Knobs that change only the speed or the final evaluation, not the weights: a new value must
# not cost a new 2.5-minute warm start.
_NOT_IN_KEY = {"data": ("eval_size",), "sft": ("torch_threads", "eval_batch_size")}


def sft_cache_key(cfg: RunConfig) -> dict[str, Any]:
    """Everything that changes the warm-start weights: data, model shape, SFT knobs."""
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in _NOT_IN_KEY["data"]}
    sft = {k: v for k, v in dataclasses.asdict(cfg.sft).items() if k not in _NOT_IN_KEY["sft"]}
    return {
        "version": SFT_CACHE_VERSION,
        "data": data,
        "model": {k: getattr(cfg.model, k) for k in _MODEL_SHAPE_FIELDS},
        "sft": sft,
    }


def sft_cache_dir(cfg: RunConfig) -> str:
    """`<cache_dir>/sft-<hash>`: a changed knob gives a new directory, never a stale hit."""
    blob = json.dumps(sft_cache_key(cfg), sort_keys=True).encode()
    return os.path.join(cfg.model.cache_dir, "sft-" + hashlib.sha256(blob).hexdigest()[:12])


def _lr_lambda(warmup: int, total: int, min_ratio: float):
    """Linear warmup, then cosine decay to `min_ratio` of the peak."""
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def _batch(tokenizer: Any, problems: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt+solution+EOS; labels are -100 except on response tokens."""
    prompts = tokenizer([p.prompt for p in problems], add_special_tokens=False)["input_ids"]
    responses = tokenizer([p.solution for p in problems], add_special_tokens=False)["input_ids"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    seqs = [p + r + [eos] for p, r in zip(prompts, responses)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        ids[i, :len(s)] = torch.tensor(s)
        labels[i, len(p):len(s)] = torch.tensor(s[len(p):])
        mask[i, :len(s)] = 1
    return ids, mask, labels


def run_sft(cfg: RunConfig, out_dir: str, progress: bool = True) -> dict:
    """Train the tiny policy on worked solutions, evaluate greedy accuracy, save an HF checkpoint."""
    t0 = time.time()
    sc = cfg.sft
    set_cpu_defaults(sc.torch_threads)
    task = get_task(cfg.data)
    tokenizer = build_char_tokenizer()
    model = build_tiny_policy(tokenizer, cfg.model, seed=sc.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=sc.lr, betas=(0.9, 0.95), weight_decay=sc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(sc.warmup_steps, sc.steps, sc.min_lr_ratio))
    rng = random.Random(sc.seed)
    losses: list[float] = []
    bar = tqdm(range(sc.steps), desc="sft", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        ids, mask, labels = _batch(tokenizer, task.sample_train(sc.batch_size, rng))
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        # Next-token loss, averaged over response tokens only.
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if sc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), sc.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{sched.get_last_lr()[0]:.1e}")
    bar.close()
    train_seconds = time.time() - t0

    model.eval()
    problems = task.eval_problems(cfg.data.eval_size)
    gen = generate(model, tokenizer, [p.prompt for p in problems], n=1, temperature=0.0,
                   max_new_tokens=cfg.rollout.max_new_tokens, micro_batch_size=sc.eval_batch_size)
    greedy_acc = accuracy(task, problems, gen, n=1)

    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-20:] or [float("nan")]
    metrics = {
        "eval_greedy_accuracy": greedy_acc,
        "final_loss": sum(tail) / len(tail),  # mean of the last steps: one batch is noisy
        "seconds": time.time() - t0,
        "train_seconds": train_seconds,
        "steps": sc.steps,
        "eval_size": len(problems),
        "mean_response_tokens": sum(len(r) for r in gen.response_ids) / max(1, len(gen)),
        "num_params": sum(p.numel() for p in model.parameters()),
        "cache_key": sft_cache_key(cfg),
    }
    with open(os.path.join(out_dir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2)
    if progress:
        print(f"sft: greedy accuracy {greedy_acc:.3f} on {len(problems)} held-out problems, "
              f"loss {metrics['final_loss']:.4f}, {metrics['seconds']:.0f}s -> {out_dir}")
    return metrics


def _is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, METRICS_FILE)) and os.path.isfile(os.path.join(path, "config.json"))


def ensure_policy(cfg: RunConfig, progress: bool = True) -> str:
    """The policy path: `model.policy_path` if set, else the cached SFT warm start (built if missing).

    The cache path comes back absolute: Ray workers need not share the driver's working directory.
    """
    if cfg.model.policy_path:
        return cfg.model.policy_path
    final = os.path.abspath(sft_cache_dir(cfg))
    if _is_complete(final):
        return final
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    with atomic_dir(final, complete=_is_complete) as tmp:
        run_sft(cfg, tmp, progress=progress)
    return final
