"""PRM warm-up before RL (issue 14, item 3; the paper trains its TD-PRM offline before RL).

    rollouts of the warm-start policy on TRAINING problems (prm_warmup.problems x prm_warmup.samples)
    -> offline TD training with the recipe's prm section (`train_prm`, the code of `tdrm-rl prm-train`)
    -> an HF PRM checkpoint (the logprob read-out's value head included), cached under model.cache_dir

The cache folder is `<cache_dir>/prm-warmup-<hash>`, the hash of everything that determines the weights: the
policy's fingerprint, the prm_warmup section, the prm section's training fields, the data section, the rollout
sampling and trainer.seed. A second run reuses it; a changed setting builds a new one. RL loads it as
model.prm_path (a saved PRM, not a fresh head) and its online TD updates continue from there.

A slice of the warm-up's own training problems (prm_warmup.val_fraction) is held out of training and scored:
step AUC against the task's exact step labels (arith) and within-problem pairwise accuracy, next to the untrained
policy-log-prob verifier. Never the eval problems.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from typing import Any, Optional

import torch

from tdrm_rl.config import RunConfig
from tdrm_rl.data.atomic import atomic_dir

log = logging.getLogger("tdrm_rl.prm_warmup")

# Bump when the warm-up recipe (code, not config) changes, so stale caches are not reused.
WARMUP_CACHE_VERSION = 1
SUMMARY_FILE = "warmup.json"
# prm fields that change only the speed, the layout or the ONLINE schedule, never the warm-up weights.
_PRM_NOT_IN_KEY = ("update", "update_every", "online_lr_scale", "zero_stage", "world_size", "micro_batch_size")
_DATA_NOT_IN_KEY = ("eval_size", "verify_timeout_s")
# The aggregation the one-line summary's pairwise accuracy uses: the state before the answer (the RL blend's read).
SUMMARY_AGG = "last"
# Environment a one-rank in-process DeepSpeed group sets; restored after, so Ray workers never inherit it.
_DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def policy_fingerprint(policy_path: str) -> dict[str, Any]:
    """The policy's identity: path, config.json, weight file names, sizes and modification times."""
    from tdrm_rl.rl.checkpoint import model_fingerprint

    fp = model_fingerprint(policy_path)
    fp["mtimes"] = {n: os.stat(os.path.join(policy_path, n)).st_mtime_ns
                    for n in sorted(os.listdir(policy_path)) if n.endswith(".safetensors")}
    return fp


def warmup_cache_key(cfg: RunConfig, policy_path: str) -> dict[str, Any]:
    """Everything that determines the warm PRM's weights."""
    rc = cfg.rollout
    return {
        "version": WARMUP_CACHE_VERSION,
        "policy": policy_fingerprint(policy_path),
        "prm_warmup": dataclasses.asdict(cfg.prm_warmup),
        "prm": {k: v for k, v in dataclasses.asdict(cfg.prm).items() if k not in _PRM_NOT_IN_KEY},
        "data": {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in _DATA_NOT_IN_KEY},
        "rollout": {"temperature": rc.temperature, "top_p": rc.top_p, "max_new_tokens": rc.max_new_tokens},
        "seed": cfg.trainer.seed,
    }


def warmup_cache_dir(cfg: RunConfig, policy_path: str) -> str:
    """`<cache_dir>/prm-warmup-<hash>` (absolute): a changed input gives a new folder, never a stale hit."""
    blob = json.dumps(warmup_cache_key(cfg, policy_path), sort_keys=True, default=str).encode()
    return os.path.abspath(os.path.join(cfg.model.cache_dir, "prm-warmup-" + hashlib.sha256(blob).hexdigest()[:12]))


def _is_complete(path: str) -> bool:
    return (os.path.isfile(os.path.join(path, SUMMARY_FILE))
            and os.path.isfile(os.path.join(path, "prm", "config.json")))


def ensure_prm(cfg: RunConfig, policy_path: str, progress: bool = True) -> Optional[str]:
    """The warm PRM's checkpoint for RL to start from (built if missing), or None: warm-up disabled, or
    model.prm_path set (that checkpoint is the start)."""
    if not cfg.prm_warmup.enabled or cfg.model.prm_path:
        return None
    final = warmup_cache_dir(cfg, policy_path)
    if not _is_complete(final):
        with atomic_dir(final, complete=_is_complete) as tmp:
            run_warmup(cfg, policy_path, tmp)
        reused = False
    else:
        reused = True
    with open(os.path.join(final, SUMMARY_FILE)) as f:
        summary = json.load(f)
    line = summary_line(summary, os.path.join(final, "prm"), reused)
    log.info(line)
    if progress:
        print(line, flush=True)
    return os.path.join(final, "prm")


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def summary_line(s: dict[str, Any], path: str, reused: bool) -> str:
    val = s.get("validation") or {}
    parts = [f"prm warm-up: {'reused' if reused else 'built'} {path}",
             f"{s['trajectories']} trajectories ({s['train_problems']} problems x {s['samples']}), "
             f"{s['objective']} loss {_fmt(s['loss_first'])} -> {_fmt(s['loss_last'])}, {s['optimizer_steps']} steps, "
             f"{s['seconds']:.0f}s"]
    if val:
        parts.append(f"val ({val['problems']} training problems held out): step AUC {_fmt(val['step_auc'])} "
                     f"(undiscounted {_fmt(val['step_auc_undiscounted'])}; log-prob baseline {_fmt(val['baseline_step_auc'])}), pairwise {_fmt(val['pairwise'])} "
                     f"(baseline {_fmt(val['baseline_pairwise'])})")
    return "; ".join(parts)


def _draw_problems(cfg: RunConfig, policy_path: str) -> list[Any]:
    """prm_warmup.problems training problems (rendered with the policy's chat template where the task needs one)."""
    from tdrm_rl.tasks.prompts import load_prompted_task

    task, _ = load_prompted_task(cfg, policy_path)  # train's prompt path
    return task.sample_train(cfg.prm_warmup.problems, random.Random(f"prm-warmup-{cfg.trainer.seed}"))


def run_warmup(cfg: RunConfig, policy_path: str, out_dir: str) -> dict[str, Any]:
    """Rollouts -> offline TD training -> out_dir/prm (HF PRM), out_dir/warmup.json (the summary and key)."""
    from tdrm_rl.models.load import set_cpu_defaults
    from tdrm_rl.models.prm_info import value_discount
    from tdrm_rl.prm_tools.offline import local_rollout_worker, sample_rollouts, train_prm
    from tdrm_rl.rl.tracking import read_metrics

    wc = cfg.prm_warmup
    t0 = time.perf_counter()
    set_cpu_defaults(cfg.trainer.torch_threads)
    saved_env = {k: os.environ.get(k) for k in _DIST_ENV}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.trainer.seed)
            problems = _draw_problems(cfg, policy_path)
            rollout = local_rollout_worker(cfg, policy_path)
            records = sample_rollouts(cfg, rollout, problems, wc.samples)
            del rollout
            rollout_s = time.perf_counter() - t0
            n_val = int(round(len(problems) * wc.val_fraction))
            n_val = min(n_val, len(problems) - 1)  # at least one problem to train on
            val = [r for r in records if r.problem_id < n_val]
            train = [r for r in records if r.problem_id >= n_val]
            trained = train_prm(cfg, policy_path, train, wc.objective, out_dir, epochs=wc.epochs,
                                batch_size=wc.batch_size, init_from_policy=True, keep_worker=bool(val))
            worker = trained.pop("worker", None)
            validation = _validate(cfg, worker, policy_path, val, value_discount(wc.objective, cfg)) if val else None
            del worker
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    losses = [r["prm/td_loss"] for r in read_metrics(os.path.join(out_dir, "metrics.jsonl")) if "prm/td_loss" in r]
    tail = max(1, len(losses) // 10)
    summary = {
        "objective": wc.objective, "train_problems": len(problems) - n_val, "samples": wc.samples,
        "trajectories": len(train), "train_accuracy": sum(r.outcome for r in train) / max(1, len(train)),
        "optimizer_steps": trained["optimizer_steps"],
        "loss_first": sum(losses[:tail]) / tail if losses else None,
        "loss_last": sum(losses[-tail:]) / tail if losses else None,
        "rollout_seconds": rollout_s, "seconds": time.perf_counter() - t0,
        "validation": validation, "key": warmup_cache_key(cfg, policy_path),
    }
    with open(os.path.join(out_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary


def _validate(cfg: RunConfig, worker, policy_path: str, val: list, discount: float) -> dict[str, Any]:
    """The warm PRM and the untrained log-prob verifier on the held-out slice of training problems."""
    from tdrm_rl.data.rollout_file import exact_step_labels
    from tdrm_rl.prm_tools.offline import logprob_verifier_records, score_records, step_metrics_eval
    from tdrm_rl.tasks import get_task

    delim = cfg.data.step_delimiter
    scored = {"warm": score_records(worker, val, delim),
              "baseline": logprob_verifier_records(policy_path, val, delim, cfg.prm.micro_batch_size)}
    labels = exact_step_labels(val, get_task(cfg.data), scored["warm"].step_mask)
    m = step_metrics_eval(scored, val, labels, {"warm": discount}, aggregations=(SUMMARY_AGG,))["prms"]
    get = lambda name, key: m[name].get(key)  # noqa: E731
    return {"problems": len({r.problem_id for r in val}), "trajectories": len(val),
            "accuracy": sum(r.outcome for r in val) / len(val),
            "step_auc": get("warm", "step_auc"), "step_auc_undiscounted": get("warm", "step_auc_undiscounted"),
            "pairwise": get("warm", f"pairwise/{SUMMARY_AGG}"),
            "baseline_step_auc": get("baseline", "step_auc"),
            "baseline_pairwise": get("baseline", f"pairwise/{SUMMARY_AGG}")}
