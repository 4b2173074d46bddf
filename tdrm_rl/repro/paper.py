"""`tdrm-rl paper`: the TDRM paper's comparison reproduced on the embedded testbed.

Per seed:
  1. rollouts: N solutions for each of P training problems, with Monte-Carlo step labels (k completions
     per step prefix), plus N_max solutions for each held-out problem (Best-of-N set);
  2. PRMs: ScalarPRM (MC labels), TD-PRM (n=2, gamma=0.8), TD(lambda) and ORM, trained on the SAME
     trajectories with the SAME optimizer steps (plus, in the full run, TD ablations over n, gamma and an
     EMA target network, step-penalty shaping);
  3. each PRM, and the untrained policy-log-prob verifier as a baseline: Best-of-N, smoothness, TD error per
     step and, against the task's exact step labels, step AUC, within-problem pairwise accuracy and
     first-error accuracy / F1 on the held-out solutions; PRM-guided step search for num_branch in {2, 4, 8, 16};
  4. RL data efficiency: GRPO with the rule reward only vs GRPO + TD-PRM (TDRM) updated online vs the same
     warm-up PRM kept frozen, held-out greedy accuracy after 1/4, 1/2 and all of the prompt budget.
Every PRM arm takes prm.readout, prm.lr and prm.backbone_lr from the recipe (`check_prm_recipe`); every RL
arm starts from the recipe's warm-up PRM (prm_warmup), as `tdrm-rl train` does.
Then mean ± std over seeds in reports/paper.md with PNG figures beside it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any

import torch

from tdrm_rl.config import RunConfig, load_config
from tdrm_rl.data.batch import Batch
from tdrm_rl.prm_tools.offline import (bon_eval, local_rollout_worker, logprob_verifier_records, sample_rollouts,
                                       score_records, search_eval, smoothness_eval, step_metrics_eval, train_prm)
from tdrm_rl.models.prm_info import value_discount
from tdrm_rl.repro.plan import (ABLATIONS, BASELINE, BUDGET_FRACTIONS, FULL, METHODS, PRM_RECIPE_FIELDS, QUICK,
                                RL_METHODS, PaperPlan)
from tdrm_rl.repro.report import write_report
from tdrm_rl.data.rollout_file import Trajectory, exact_step_labels, write_jsonl
from tdrm_rl.prm_tools.search import SearchSettings
from tdrm_rl.tasks import get_task

__all__ = ["PaperPlan", "FULL", "QUICK", "METHODS", "ABLATIONS", "run_paper", "check_prm_recipe"]


REUSED = "reused parts (their run time when they ran)"
# Bump when what a finished seed or RL run holds changes, so a resumed run never reports a stale result.
RESULT_VERSION = 2


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.encode("ascii", "ignore").decode()).strip("_").lower()


def _cfg(recipe: str, overrides: list[str], *extra: str) -> RunConfig:
    return load_config(recipe, [*overrides, *extra])


def _prm_recipe(cfg: RunConfig) -> dict[str, Any]:
    return {f: getattr(cfg.prm, f) for f in PRM_RECIPE_FIELDS}


def check_prm_recipe(recipe: str, base: list[str], methods=METHODS, rl_methods=RL_METHODS) -> dict[str, Any]:
    """The recipe's PRM training fields (PRM_RECIPE_FIELDS), after checking that no arm overrides them (that
    would compare recipes, not objectives) and that every RL arm keeps the recipe's prm_warmup section."""
    ref = _cfg(recipe, base)
    want = _prm_recipe(ref)
    for label, *_, extra in [*methods, *rl_methods]:
        cfg = _cfg(recipe, base, *extra)
        if _prm_recipe(cfg) != want:
            raise ValueError(f"paper arm {label!r} overrides the PRM recipe: {_prm_recipe(cfg)} instead of the "
                             f"recipe's {want}; every arm must train the PRM the same way")
    for label, extra in rl_methods:
        if _cfg(recipe, base, *extra).prm_warmup != ref.prm_warmup:
            raise ValueError(f"paper RL arm {label!r} overrides prm_warmup: every RL arm starts from the recipe's "
                             "warm-up PRM, as `tdrm-rl train` does")
    return want


def run_paper(recipe: str, overrides: list[str], plan: PaperPlan, report_dir: str, work_dir: str,
              command: str, progress: bool = True) -> dict[str, Any]:
    from tdrm_rl.models.sft import ensure_policy

    t_start = time.perf_counter()
    timer = Timer()
    base = [*plan.sft_overrides, *overrides, "trainer.progress=false", "trainer.loggers=[jsonl]"]
    methods = METHODS + (ABLATIONS if plan.ablations else ())
    prm_recipe = check_prm_recipe(recipe, base, methods)
    cfg0 = _cfg(recipe, base)
    t0 = time.perf_counter()
    policy_path = ensure_policy(cfg0, progress=progress)
    timer.add("warm start (SFT, cached)", time.perf_counter() - t0)
    results: dict[str, Any] = {"plan": dataclasses.asdict(plan), "prm_recipe": prm_recipe, "seeds": {}}
    for seed in plan.seeds:
        log = (lambda msg, s=seed: print(f"paper[seed {s}] {msg}", flush=True)) if progress else (lambda msg: None)
        # The resolved config, not only the overrides: a changed recipe or default (the PRM recipe) reruns.
        key = {"version": RESULT_VERSION, "plan": results["plan"], "overrides": base, "config": dataclasses.asdict(cfg0),
               "policy": policy_path, "methods": methods, "seed": seed}
        results["seeds"][seed] = _finished_part(
            os.path.join(work_dir, f"seed{seed}"), key, log,
            lambda work, s=seed: _offline_seed(recipe, base, plan, s, policy_path, methods, work, timer, log), timer)
    results["rl"] = _rl(recipe, base, plan, policy_path, os.path.join(work_dir, "rl"), timer, progress)
    total = time.perf_counter() - t_start
    results["timings_s"] = dict(timer.seconds, total=total)
    if REUSED in timer.seconds:
        results["timings_s"]["total with the reused parts"] = total + timer.seconds[REUSED]
    results["command"] = command
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "paper.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)
    write_report(results, methods, report_dir)
    return results


def _finished_part(work: str, key: dict[str, Any], log, run, timer: Timer | None = None) -> dict[str, Any]:
    """`run(work)`'s result, kept in work/result.json: a rerun with the same key reuses it (a full run is
    hours of CPU; an interrupted one resumes at the first unfinished seed or RL run). Its run time is kept
    too, so a resumed report still counts what the reused parts cost when they ran."""
    path = os.path.join(work, "result.json")
    key = json.loads(json.dumps(key, default=str))
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("key") == key:
            log(f"reused {path}")
            if timer is not None and "seconds" in saved:
                timer.add(REUSED, saved["seconds"])
            return saved["result"]
    t0 = time.perf_counter()
    result = run(work)
    with open(path + ".tmp", "w") as f:
        json.dump({"key": key, "result": result, "seconds": time.perf_counter() - t0}, f, default=str)
    os.replace(path + ".tmp", path)
    return result


# ----- offline PRM comparison ---------------------------------------------------------------------------

def _offline_seed(recipe: str, base: list[str], plan: PaperPlan, seed: int, policy_path: str, methods, work: str,
                  timer: Timer, log) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cfg = _cfg(recipe, base, f"trainer.seed={seed}")
    task = get_task(cfg.data)
    import random

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rollout = local_rollout_worker(cfg, policy_path)
    train_problems = task.sample_train(plan.train_problems, random.Random(f"paper-train-{seed}"))
    train = sample_rollouts(cfg, rollout, train_problems, plan.samples_per_problem, plan.mc_samples)
    write_jsonl(os.path.join(work, "train_rollouts.jsonl"), train)
    timer.add("rollouts + MC labels (train)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    eval_problems = task.eval_problems(plan.bon_problems)
    held_out = sample_rollouts(cfg, rollout, eval_problems, plan.bon_n)
    write_jsonl(os.path.join(work, "eval_rollouts.jsonl"), held_out)
    timer.add("rollouts (Best-of-N set)", time.perf_counter() - t0)
    log(f"rollouts: train accuracy {sum(r.outcome for r in train) / len(train):.3f}, "
        f"held-out {sum(r.outcome for r in held_out) / len(held_out):.3f}")

    out: dict[str, Any] = {"train_accuracy": sum(r.outcome for r in train) / len(train),
                           "heldout_sample_accuracy": sum(r.outcome for r in held_out) / len(held_out),
                           "methods": {}}
    t0 = time.perf_counter()
    logprob = logprob_verifier_records(policy_path, held_out, cfg.data.step_delimiter, cfg.prm.micro_batch_size)
    baseline = {"objective": "none (untrained policy log-probs)", **_verifier_eval(logprob, held_out, task, 1.0)}
    timer.add("log-prob baseline (no training)", time.perf_counter() - t0)
    log(f"{BASELINE}: {_summary(baseline, plan)}")
    main_labels = {m[0] for m in METHODS}
    for label, objective, extra in methods:
        mcfg = _cfg(recipe, base, f"trainer.seed={seed}", *extra)
        t0 = time.perf_counter()
        trained = train_prm(mcfg, policy_path, train, objective, os.path.join(work, _slug(label)),
                            epochs=plan.prm_epochs, batch_size=plan.prm_batch_size, keep_worker=True)
        timer.add("PRM training", time.perf_counter() - t0)
        prm = trained.pop("worker")
        t0 = time.perf_counter()
        scored = score_records(prm, held_out, cfg.data.step_delimiter)
        entry = {"objective": objective, "overrides": list(extra), "train": trained, "prm_recipe": _prm_recipe(mcfg),
                 **_verifier_eval(scored, held_out, task, value_discount(objective, mcfg))}
        timer.add("Best-of-N + smoothness + step metrics", time.perf_counter() - t0)
        if label in main_labels:
            t0 = time.perf_counter()
            entry["search"] = {}
            for nb in plan.search_branches:
                torch.manual_seed(seed * 1000 + nb)  # every PRM searches with the same sampling seed
                settings = SearchSettings(beam_width=plan.beam_width, num_branch=nb, max_depth=cfg.data.num_ops + 2,
                                          max_length=cfg.rollout.max_new_tokens, step_max_tokens=32,
                                          delimiter=cfg.data.step_delimiter, temperature=cfg.rollout.temperature,
                                          top_p=cfg.rollout.top_p)
                entry["search"][str(nb)] = search_eval(cfg, rollout, prm, eval_problems[:plan.search_problems], settings)
            timer.add("step search", time.perf_counter() - t0)
        log(f"{label}: {_summary(entry, plan)}"
            + (f", search@{plan.search_branches[-1]} {entry['search'][str(plan.search_branches[-1])]['accuracy']:.3f}"
               if "search" in entry else ""))
        out["methods"][label] = entry
        del prm
    out["methods"][BASELINE] = baseline
    return out


def _verifier_eval(scored: Batch, records: list[Trajectory], task: Any, discount: float) -> dict[str, Any]:
    """Best-of-N, smoothness and step metrics (exact step labels where the task has them) of one scored set;
    `discount`: the discount its values carry (the first-error rule undoes it)."""
    labels = exact_step_labels(records, task, scored.step_mask)
    return {"bon": bon_eval({"prm": scored}, records), "smoothness": smoothness_eval(scored),
            "step_metrics": step_metrics_eval({"prm": scored}, records, labels, {"prm": discount})["prms"]["prm"]}


def _summary(entry: dict[str, Any], plan: PaperPlan) -> str:
    acc, sm = entry["bon"]["accuracy"], entry["step_metrics"]
    return (f"BoN@{plan.bon_n} min {acc['prm/min'][-1]:.3f} final {acc['prm/final'][-1]:.3f}, step AUC "
            f"{sm.get('step_auc', math.nan):.3f}, pairwise (min) {sm['pairwise/min']:.3f}, first-error F1 "
            f"{sm.get('first_error_f1', math.nan):.3f}, smoothness {entry['smoothness']['smoothness_per_step']:.4f}")


# ----- RL data efficiency -------------------------------------------------------------------------------

def rl_run_dir(work: str, label: str, seed: int) -> str:
    """Where one RL arm's run for one seed writes (config.yaml, metrics.jsonl, checkpoints)."""
    return os.path.join(work, _slug(label)[:40], f"seed{seed}")


def budget_steps(total: int) -> list[int]:
    return [max(1, total * a // b) for a, b in BUDGET_FRACTIONS]


def _rl(recipe: str, base: list[str], plan: PaperPlan, policy_path: str, work: str, timer: Timer,
        progress: bool) -> dict[str, Any]:
    import ray

    from tdrm_rl.cli.runtime import init_ray
    from tdrm_rl.prm_tools.warmup import ensure_prm, warmup_cache_dir
    from tdrm_rl.rl.trainer import RLTrainer
    from tdrm_rl.rl.tracking import read_metrics

    steps = budget_steps(plan.rl_steps)
    eval_every = math.gcd(*steps)
    sizes = [f"rollout.prompts_per_step={plan.rl_prompts_per_step}", f"rollout.group_size={plan.rl_group_size}",
             f"trainer.total_steps={plan.rl_steps}", f"trainer.eval_every={eval_every}",
             f"data.eval_size={plan.rl_eval_size}", "trainer.eval_sampled=false",
             *plan.warmup_overrides]
    started = False if ray.is_initialized() else init_ray(_cfg(recipe, base))
    out: dict[str, Any] = {"budget_steps": steps, "prompts": [s * plan.rl_prompts_per_step for s in steps],
                           "methods": {}}
    log = (lambda msg: print(f"paper[rl] {msg}", flush=True)) if progress else (lambda msg: None)
    try:
        for label, extra in RL_METHODS:
            runs = {}
            for seed in plan.rl_seeds:
                run_dir = rl_run_dir(work, label, seed)
                cfg = _cfg(recipe, base, *sizes, *extra, f"trainer.seed={seed}", f"trainer.output_dir={run_dir}")

                def run_once(run_dir: str, cfg: RunConfig = cfg) -> dict[str, Any]:
                    shutil.rmtree(run_dir, ignore_errors=True)
                    t0 = time.perf_counter()
                    warm = ensure_prm(cfg, policy_path, progress=progress)  # the PRM RL starts from, as `train`
                    timer.add("PRM warm-up (cached per seed)", time.perf_counter() - t0)
                    if warm:
                        cfg.model.prm_path = warm
                    t0 = time.perf_counter()
                    with RLTrainer(cfg, policy_path) as trainer:
                        trainer.fit()
                    timer.add("RL (GRPO runs)", time.perf_counter() - t0)
                    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
                    acc = {r["step"]: r["eval/greedy_accuracy"] for r in rows
                           if r.get("eval/greedy_accuracy") is not None}
                    return {"warm_start": acc.get(0), "at_budget": [acc.get(s) for s in steps]}

                key = {"version": RESULT_VERSION, "plan": dataclasses.asdict(plan), "overrides": base,
                       "config": dataclasses.asdict(cfg), "policy": policy_path, "label": label,
                       "extra": extra, "sizes": sizes, "seed": seed,
                       "prm_warmup": warmup_cache_dir(cfg, policy_path) if cfg.prm_warmup.enabled else None}
                runs[seed] = _finished_part(run_dir, key, log, run_once, timer)
                log(f"{label} seed {seed}: greedy held-out {runs[seed]}")
            out["methods"][label] = runs
    finally:
        if started:
            ray.shutdown()
    return out
