"""`tdrm-rl paper`: the TDRM paper's comparison reproduced on the embedded testbed.

Per seed:
  1. rollouts: N solutions for each of P training problems, with Monte-Carlo step labels (k completions
     per step prefix), plus N_max solutions for each held-out problem (Best-of-N set);
  2. PRMs: ScalarPRM (MC labels), TD-PRM (n=2, gamma=0.8), TD(lambda) and ORM, trained on the SAME
     trajectories with the SAME optimizer steps (plus, in the full run, TD ablations over n, gamma and an
     EMA target network, step-penalty shaping);
  3. each PRM: Best-of-N, smoothness and TD error per step on the held-out solutions; PRM-guided step
     search for num_branch in {2, 4, 8, 16};
  4. RL data efficiency: GRPO with the rule reward only vs GRPO + online TD-PRM (TDRM), held-out greedy
     accuracy after 1/4, 1/2 and all of the prompt budget.
Then mean ± std over seeds in reports/paper.md with PNG figures beside it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from tdrm_rl.config import RunConfig, load_config
from tdrm_rl.prm_tools.offline import (bon_eval, local_rollout_worker, sample_rollouts, score_records, search_eval,
                             smoothness_eval, train_prm)
from tdrm_rl.repro.tables import fmt_mean_std, markdown_table, mean_std, plot_lines
from tdrm_rl.data.rollout_file import write_jsonl
from tdrm_rl.prm_tools.search import SearchSettings
from tdrm_rl.tasks import get_task

__all__ = ["PaperPlan", "FULL", "QUICK", "METHODS", "ABLATIONS", "run_paper"]


@dataclass(frozen=True)
class PaperPlan:
    seeds: tuple[int, ...] = (0, 1, 2)
    train_problems: int = 128  # training problems for the offline PRMs
    samples_per_problem: int = 4  # trajectories per training problem
    mc_samples: int = 4  # completions per step prefix (ScalarPRM labels)
    prm_epochs: int = 4
    prm_batch_size: int = 64
    bon_problems: int = 100  # held-out problems for Best-of-N
    bon_n: int = 16  # N_max
    search_problems: int = 50  # held-out problems for step search (the first of the Best-of-N set)
    search_branches: tuple[int, ...] = (2, 4, 8, 16)
    beam_width: int = 2
    rl_steps: int = 80  # the prompt budget is rl_steps * rl_prompts_per_step
    rl_prompts_per_step: int = 16
    rl_group_size: int = 8
    rl_eval_size: int = 200
    ablations: bool = True
    rl_seeds: tuple[int, ...] = (0, 1, 2)
    sft_overrides: tuple[str, ...] = ()  # the warm start (cached; the same for every seed)


FULL = PaperPlan()
# For tests: every stage and every table row, on tiny sizes; the warm start is the e2e tests' (cached).
QUICK = PaperPlan(seeds=(0, 1), train_problems=8, samples_per_problem=4, mc_samples=2, prm_epochs=1,
                  prm_batch_size=16, bon_problems=8, bon_n=4, search_problems=4, beam_width=1, rl_steps=4,
                  rl_prompts_per_step=4, rl_group_size=4, rl_eval_size=16, ablations=False, rl_seeds=(0,),
                  sft_overrides=("sft.steps=150",))

# (label, objective, config overrides). TD(lambda) uses the paper's gamma=1, lambda=0.7.
METHODS = (
    ("ScalarPRM (MC labels)", "scalar", ()),
    ("TD-PRM (n=2, γ=0.8)", "td", ("prm.td_mode=nstep", "prm.n_step=2", "prm.gamma=0.8")),
    ("TD(λ) (γ=1, λ=0.7)", "td_lambda", ("prm.td_mode=lambda", "prm.gamma=1.0", "prm.lam=0.7")),
    ("ORM (outcome only)", "orm", ()),
)
# What the paper varies, for TD: the lookahead n, the discount, a target network, and reward shaping.
ABLATIONS = (
    ("TD n=1, γ=0.8", "td", ("prm.n_step=1", "prm.gamma=0.8")),
    ("TD n=4, γ=0.8", "td", ("prm.n_step=4", "prm.gamma=0.8")),
    ("TD n=2, γ=1.0", "td", ("prm.n_step=2", "prm.gamma=1.0")),
    ("TD n=2, γ=0.8, EMA target (0.9)", "td", ("prm.n_step=2", "prm.gamma=0.8", "prm.bootstrap=ema",
                                                "prm.ema_decay=0.9")),
    ("TD n=2, γ=0.8, step penalty 0.05", "td", ("prm.n_step=2", "prm.gamma=0.8", "prm.shaping=step_penalty",
                                                 "prm.shaping_coef=0.05")),
)
RL_METHODS = (
    ("GRPO, rule reward only", ("reward.w_rule=1.0", "reward.w_prm=0.0", "prm.update=frozen")),
    ("GRPO + TDRM (online TD-PRM, 0.8 rule + 0.2 PRM)", ("reward.w_rule=0.8", "reward.w_prm=0.2",
                                                         "prm.update=online")),
)
BUDGET_FRACTIONS = ((1, 4), (1, 2), (1, 1))


REUSED = "reused parts (their run time when they ran)"


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.encode("ascii", "ignore").decode()).strip("_").lower()


def _cfg(recipe: str, overrides: list[str], *extra: str) -> RunConfig:
    return load_config(recipe, [*overrides, *extra])


def run_paper(recipe: str, overrides: list[str], plan: PaperPlan, report_dir: str, work_dir: str,
              command: str, progress: bool = True) -> dict[str, Any]:
    from tdrm_rl.models.sft import ensure_policy

    t_start = time.perf_counter()
    timer = Timer()
    base = [*plan.sft_overrides, *overrides, "trainer.progress=false", "trainer.tensorboard=false"]
    cfg0 = _cfg(recipe, base)
    t0 = time.perf_counter()
    policy_path = ensure_policy(cfg0, progress=progress)
    timer.add("warm start (SFT, cached)", time.perf_counter() - t0)
    methods = METHODS + (ABLATIONS if plan.ablations else ())
    results: dict[str, Any] = {"plan": dataclasses.asdict(plan), "seeds": {}}
    for seed in plan.seeds:
        log = (lambda msg, s=seed: print(f"paper[seed {s}] {msg}", flush=True)) if progress else (lambda msg: None)
        key = {"plan": results["plan"], "overrides": base, "policy": policy_path, "methods": methods, "seed": seed}
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
        bon = bon_eval({"prm": scored}, held_out)
        smooth = smoothness_eval(scored)
        timer.add("Best-of-N + smoothness", time.perf_counter() - t0)
        entry = {"objective": objective, "overrides": list(extra), "train": trained, "bon": bon, "smoothness": smooth}
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
        acc = bon["accuracy"]
        log(f"{label}: BoN@{plan.bon_n} min {acc['prm/min'][-1]:.3f} final {acc['prm/final'][-1]:.3f}, "
            f"smoothness {smooth['smoothness_per_step']:.4f}"
            + (f", search@{plan.search_branches[-1]} {entry['search'][str(plan.search_branches[-1])]['accuracy']:.3f}"
               if "search" in entry else ""))
        out["methods"][label] = entry
        del prm
    return out


# ----- RL data efficiency -------------------------------------------------------------------------------

def budget_steps(total: int) -> list[int]:
    return [max(1, total * a // b) for a, b in BUDGET_FRACTIONS]


def _rl(recipe: str, base: list[str], plan: PaperPlan, policy_path: str, work: str, timer: Timer,
        progress: bool) -> dict[str, Any]:
    import ray

    from tdrm_rl.cli.runtime import init_ray
    from tdrm_rl.rl.trainer import RLTrainer
    from tdrm_rl.rl.tracking import read_metrics

    steps = budget_steps(plan.rl_steps)
    eval_every = math.gcd(*steps)
    sizes = [f"rollout.prompts_per_step={plan.rl_prompts_per_step}", f"rollout.group_size={plan.rl_group_size}",
             f"trainer.total_steps={plan.rl_steps}", f"trainer.eval_every={eval_every}",
             f"data.eval_size={plan.rl_eval_size}", "trainer.eval_sampled=false"]
    started = False if ray.is_initialized() else init_ray(_cfg(recipe, base))
    out: dict[str, Any] = {"budget_steps": steps, "prompts": [s * plan.rl_prompts_per_step for s in steps],
                           "methods": {}}
    log = (lambda msg: print(f"paper[rl] {msg}", flush=True)) if progress else (lambda msg: None)
    try:
        for label, extra in RL_METHODS:
            runs = {}
            for seed in plan.rl_seeds:
                run_dir = os.path.join(work, _slug(label)[:40], f"seed{seed}")

                def run_once(run_dir: str, seed: int = seed, extra=extra) -> dict[str, Any]:
                    shutil.rmtree(run_dir, ignore_errors=True)
                    cfg = _cfg(recipe, base, *sizes, *extra, f"trainer.seed={seed}", f"trainer.output_dir={run_dir}")
                    t0 = time.perf_counter()
                    trainer = RLTrainer(cfg, policy_path)
                    try:
                        trainer.fit()
                    finally:
                        trainer.shutdown()
                    timer.add("RL (GRPO runs)", time.perf_counter() - t0)
                    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
                    acc = {r["step"]: r["eval/greedy_accuracy"] for r in rows
                           if r.get("eval/greedy_accuracy") is not None}
                    return {"warm_start": acc.get(0), "at_budget": [acc.get(s) for s in steps]}

                key = {"plan": dataclasses.asdict(plan), "overrides": base, "policy": policy_path, "label": label,
                       "extra": extra, "sizes": sizes, "seed": seed}
                runs[seed] = _finished_part(run_dir, key, log, run_once, timer)
                log(f"{label} seed {seed}: greedy held-out {runs[seed]}")
            out["methods"][label] = runs
    finally:
        if started:
            ray.shutdown()
    return out


# ----- the report ---------------------------------------------------------------------------------------------

def _per_seed(results: dict[str, Any], label: str, get) -> list[Optional[float]]:
    vals = []
    for seed_res in results["seeds"].values():
        entry = seed_res["methods"].get(label)
        vals.append(get(entry) if entry is not None else None)
    return vals


MAIN_COLUMNS = ("BoN@1", "BoN@N_max (min)", "BoN@N_max (final)", "search@2", "search@16",
                "smoothness (d=1 per step)", "smoothness (d=step tokens)")


def main_table(results: dict[str, Any], methods) -> tuple[list[str], list[list[str]], dict[str, list]]:
    """One row per method, every column mean ± std over seeds; the raw per-seed values alongside."""
    plan = results["plan"]
    branches = [str(b) for b in plan["search_branches"]]
    rows, raw = [], {}
    for label, *_ in methods:
        cols = [
            _per_seed(results, label, lambda e: e["bon"]["accuracy"]["prm/min"][0]),
            _per_seed(results, label, lambda e: e["bon"]["accuracy"]["prm/min"][-1]),
            _per_seed(results, label, lambda e: e["bon"]["accuracy"]["prm/final"][-1]),
            _per_seed(results, label, lambda e: e["search"][branches[0]]["accuracy"] if "search" in e else None),
            _per_seed(results, label, lambda e: e["search"][branches[-1]]["accuracy"] if "search" in e else None),
            _per_seed(results, label, lambda e: e["smoothness"]["smoothness_per_step"]),
            _per_seed(results, label, lambda e: e["smoothness"]["smoothness_per_token"]),
        ]
        raw[label] = cols
        rows.append([label] + [fmt_mean_std(c) for c in cols])
    return ["method", *MAIN_COLUMNS], rows, raw


def write_report(results: dict[str, Any], methods, report_dir: str) -> str:
    plan = results["plan"]
    seeds = list(results["seeds"])
    n_max = plan["bon_n"]
    header, rows, raw = main_table(results, METHODS)
    parts = [
        "# TDRM on the embedded testbed: ScalarPRM vs TD-PRM vs TD(λ) vs ORM",
        "",
        f"Made by: `{results['command']}`",
        "",
        f"Seeds {seeds}; every number is mean ± std (sample std) over the seeds. Policy: the warm-started tiny "
        f"policy on the embedded arithmetic task. PRMs start from the policy backbone with a fresh scalar head "
        f"and are trained offline on the same {plan['train_problems']} problems x {plan['samples_per_problem']} "
        f"trajectories, {plan['prm_epochs']} epochs at batch {plan['prm_batch_size']} (the same optimizer steps "
        f"for every objective). ScalarPRM labels: a step is 1 if any of {plan['mc_samples']} completions from it "
        f"is right. Best-of-N: {plan['bon_problems']} held-out problems x {n_max} samples, accuracy at N averaged "
        f"over disjoint blocks of N. Search: beam width {plan['beam_width']}, {plan['search_problems']} held-out "
        f"problems, one step per generate call (stop string = the step delimiter).",
        "",
        "## PRM comparison",
        "",
        "BoN columns: accuracy of the solution the PRM ranks first; 'min' = min over reasoning-step values, "
        "'final' = value of the final state. Search columns: accuracy of PRM-guided step search with "
        "num_branch 2 and 16. Smoothness: mean |V(s_t+1) - V(s_t)| / d over consecutive states (lower is smoother).",
        "",
        markdown_table(header, rows),
        "",
    ]
    parts += _findings(raw)
    ablations = [m for m in methods if m not in METHODS]
    if ablations:
        _, abl_rows, _ = main_table(results, ablations)
        keep = [0, 1, 2, 3, 6, 7]  # no search columns: the ablations run Best-of-N and smoothness only
        parts += ["## TD ablations (what the paper varies: n, γ, target network, shaping)", "",
                  markdown_table([header[i] for i in keep], [[r[i] for i in keep] for r in abl_rows]), ""]
    parts += _bon_section(results, methods, report_dir)
    parts += _search_section(results, report_dir)
    parts += _td_error_section(results, methods, report_dir)
    parts += _rl_section(results, report_dir)
    timings = results["timings_s"]
    parts += ["## Stage timings (seconds, all seeds)", "",
              markdown_table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()]), ""]
    path = os.path.join(report_dir, "paper.md")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


def _findings(raw: dict[str, list]) -> list[str]:
    """Plain statements of the measured TD-PRM vs ScalarPRM differences (whatever their sign)."""
    td, sc = raw.get(METHODS[1][0]), raw.get(METHODS[0][0])
    if td is None or sc is None:
        return []
    lines = ["**TD-PRM minus ScalarPRM** (mean over seeds; positive = TD-PRM better, except smoothness where "
             "negative = TD-PRM smoother):", ""]
    for name, a, b in zip(MAIN_COLUMNS, td, sc):
        ma, mb = mean_std(a)[0], mean_std(b)[0]
        if math.isnan(ma) or math.isnan(mb):
            continue
        lines.append(f"- {name}: {ma - mb:+.3f} ({ma:.3f} vs {mb:.3f})")
    return lines + [""]


def _bon_section(results, methods, report_dir) -> list[str]:
    plan = results["plan"]
    sizes = next(iter(results["seeds"].values()))["methods"][methods[0][0]]["bon"]["N"]
    aggs = ("last", "min", "mean", "product", "final")
    rows, curves = [], {}
    for label, *_ in methods:
        for agg in aggs:
            per_n = [_per_seed(results, label, lambda e, i=i, a=agg: e["bon"]["accuracy"][f"prm/{a}"][i])
                     for i in range(len(sizes))]
            rows.append([label, agg] + [fmt_mean_std(v) for v in per_n])
            if agg == "min" and label in {m[0] for m in METHODS}:
                curves[label] = (sizes, [mean_std(v)[0] for v in per_n], [mean_std(v)[1] for v in per_n])
    first = METHODS[0][0]
    for ref in ("majority_vote", "pass@N"):
        per_n = [_per_seed(results, first, lambda e, i=i, r=ref: e["bon"]["accuracy"][r][i]) for i in range(len(sizes))]
        rows.append([ref, "-"] + [fmt_mean_std(v) for v in per_n])
        curves[ref] = (sizes, [mean_std(v)[0] for v in per_n], [mean_std(v)[1] for v in per_n])
    plot_lines(curves, os.path.join(report_dir, "paper_bon.png"), f"Best-of-N (min aggregation), N_max={plan['bon_n']}",
               "N", "held-out accuracy", logx=True)
    return ["## Best-of-N, every aggregation", "", "![Best-of-N](paper_bon.png)", "",
            markdown_table(["method", "aggregation"] + [f"N={n}" for n in sizes], rows), ""]


def _search_section(results, report_dir) -> list[str]:
    plan = results["plan"]
    branches = [str(b) for b in plan["search_branches"]]
    rows, curves = [], {}
    for label, *_ in METHODS:
        accs = [_per_seed(results, label, lambda e, b=b: e["search"][b]["accuracy"]) for b in branches]
        toks = [_per_seed(results, label, lambda e, b=b: e["search"][b]["tokens_per_problem"]) for b in branches]
        for b, a, t in zip(branches, accs, toks):
            rows.append([label, b, fmt_mean_std(a), fmt_mean_std(t, 0)])
        curves[label] = ([mean_std(t)[0] for t in toks], [mean_std(a)[0] for a in accs], None)
    plot_lines(curves, os.path.join(report_dir, "paper_search.png"),
               f"PRM-guided step search (beam {plan['beam_width']}, num_branch {', '.join(branches)})",
               "generated tokens per problem", "held-out accuracy", logx=True)
    return ["## Step search", "", "![Search](paper_search.png)", "",
            markdown_table(["method", "num_branch", "accuracy", "tokens generated / problem"], rows), ""]


def _td_error_section(results, methods, report_dir) -> list[str]:
    first_seed = next(iter(results["seeds"].values()))
    width = max(len(e["smoothness"]["td_error_by_step"]) for e in first_seed["methods"].values())
    rows, curves = [], {}
    for label, *_ in methods:
        per_i = [_per_seed(results, label, lambda e, i=i: (e["smoothness"]["td_error_by_step"] + [None] * width)[i])
                 for i in range(width)]
        rows.append([label] + [fmt_mean_std(v) for v in per_i])
        if label in {m[0] for m in METHODS}:
            curves[label] = (list(range(1, width + 1)), [mean_std(v)[0] for v in per_i], None)
    plot_lines(curves, os.path.join(report_dir, "paper_td_error.png"), "Mean |TD error| per step (n=2, γ=0.8)",
               "step index", "mean |V - y|")
    return ["## Mean |TD error| per step index", "",
            "|V(s_i) - y_i| with y the 2-step, γ=0.8 TD target bootstrapped from the same PRM (the final state's "
            "target is the outcome), on the held-out Best-of-N solutions.", "", "![TD error](paper_td_error.png)", "",
            markdown_table(["method"] + [f"step {i + 1}" for i in range(width)], rows), ""]


def _rl_section(results, report_dir) -> list[str]:
    rl = results["rl"]
    plan = results["plan"]
    rows, curves = [], {}
    for label, runs in rl["methods"].items():
        warm = [r["warm_start"] for r in runs.values()]
        at = [[r["at_budget"][i] for r in runs.values()] for i in range(len(rl["prompts"]))]
        rows.append([label, fmt_mean_std(warm)] + [fmt_mean_std(a) for a in at])
        curves[label] = ([0] + rl["prompts"], [mean_std(warm)[0]] + [mean_std(a)[0] for a in at],
                         [mean_std(warm)[1]] + [mean_std(a)[1] for a in at])
    plot_lines(curves, os.path.join(report_dir, "paper_rl.png"), "RL data efficiency", "training prompts",
               "held-out greedy accuracy")
    fractions = [f"{a}/{b}" if a != b else "all" for a, b in BUDGET_FRACTIONS]
    header = ["method", "warm start"] + [f"{f} of budget ({p} prompts)" for f, p in zip(fractions, rl["prompts"])]
    return ["## RL data efficiency", "",
            f"Held-out greedy accuracy ({plan['rl_eval_size']} problems) after GRPO on 1/4, 1/2 and all of a "
            f"budget of {rl['prompts'][-1]} prompts ({plan['rl_prompts_per_step']} prompts x {plan['rl_group_size']} "
            f"samples per step, fresh prompts every step, constant learning rate), seeds {plan['rl_seeds']}. Each seed is one run, evaluated "
            f"when it has used each fraction of the budget.", "", "![RL](paper_rl.png)", "",
            markdown_table(header, rows), ""]
