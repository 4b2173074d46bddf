"""The paper report: markdown tables (mean ± std over seeds) and PNG figures from `run_paper`'s results."""

from __future__ import annotations

import math
import os
from typing import Any, Optional

from tdrm_rl.algos.prm_metrics import FIRST_ERROR_THRESHOLD
from tdrm_rl.repro.plan import BASELINE, BUDGET_FRACTIONS, FROZEN_ARM, METHODS, ONLINE_ARM, RL_METHODS
from tdrm_rl.repro.tables import fmt_mean_std, markdown_table, mean_std, plot_lines

def _per_seed(results: dict[str, Any], label: str, get) -> list[Optional[float]]:
    vals = []
    for seed_res in results["seeds"].values():
        entry = seed_res["methods"].get(label)
        vals.append(get(entry) if entry is not None else None)
    return vals


def _step(key: str):
    """Getter of one exact-label step metric (None where the task has no step labels)."""
    return lambda e: e.get("step_metrics", {}).get(key)


def _search(i: int):
    return lambda e, i=i: e["search"][sorted(e["search"], key=int)[i]]["accuracy"] if "search" in e else None


# (column, getter of the value in one seed's method entry); search@2 / @16 = the first and last num_branch.
MAIN_GETTERS = (
    ("BoN@1", lambda e: e["bon"]["accuracy"]["prm/min"][0]),
    ("BoN@N_max (min)", lambda e: e["bon"]["accuracy"]["prm/min"][-1]),
    ("BoN@N_max (final)", lambda e: e["bon"]["accuracy"]["prm/final"][-1]),
    ("step AUC", _step("step_auc")),
    ("pairwise (min)", _step("pairwise/min")),
    ("first-error acc", _step("first_error_acc")),
    ("first-error F1", _step("first_error_f1")),
    ("search@2", _search(0)),
    ("search@16", _search(-1)),
    ("smoothness (d=1 per step)", lambda e: e["smoothness"]["smoothness_per_step"]),
    ("smoothness (d=step tokens)", lambda e: e["smoothness"]["smoothness_per_token"]),
)
MAIN_COLUMNS = tuple(name for name, _ in MAIN_GETTERS)
STEP_GETTERS = (
    ("step AUC", _step("step_auc")),
    ("step AUC (undiscounted)", _step("step_auc_undiscounted")),
    ("pairwise (min)", _step("pairwise/min")),
    ("pairwise (last)", _step("pairwise/last")),
    ("pairwise (final)", _step("pairwise/final")),
    ("across problems (min)", _step("across/min")),
    ("first-error acc", _step("first_error_acc")),
    ("error-free acc", _step("first_error_correct_acc")),
    ("first-error F1", _step("first_error_f1")),
)
# Rows without a verifier: the same number in both BoN@N_max columns (they need no aggregation).
REFERENCES = (("majority vote (no verifier)", "majority_vote"), ("pass@N (oracle)", "pass@N"))


def main_table(results: dict[str, Any], methods, getters=MAIN_GETTERS, baseline: bool = True,
               references: bool = True) -> tuple[list[str], list[list[str]], dict[str, list]]:
    """One row per method (then the log-prob baseline and the majority-vote / pass@N reference rows), every
    column mean ± std over seeds; the raw per-seed values alongside."""
    labels = [m[0] for m in methods] + ([BASELINE] if baseline else [])
    rows, raw = [], {}
    for label in labels:
        cols = [_per_seed(results, label, get) for _, get in getters]
        raw[label] = cols
        rows.append([label] + [fmt_mean_std(c) for c in cols])
    first = methods[0][0]
    for name, key in REFERENCES if references else ():
        per_col = {"BoN@1": 0, "BoN@N_max (min)": -1, "BoN@N_max (final)": -1}
        rows.append([name] + [fmt_mean_std(_per_seed(results, first, lambda e, i=per_col[c]: e["bon"]["accuracy"][key][i]))
                              if c in per_col else "-" for c, _ in getters])
    return ["method", *(name for name, _ in getters)], rows, raw


def write_report(results: dict[str, Any], methods, report_dir: str) -> str:
    plan = results["plan"]
    seeds = list(results["seeds"])
    n_max = plan["bon_n"]
    header, rows, raw = main_table(results, METHODS)
    prm = results.get("prm_recipe", {})
    parts = [
        "# TDRM on the embedded testbed: ScalarPRM vs TD-PRM vs TD(λ) vs ORM",
        "",
        f"Made by: `{results['command']}`",
        "",
        f"Seeds {seeds}; every number is mean ± std (sample std) over the seeds. Policy: the warm-started tiny "
        f"policy on the embedded arithmetic task. PRMs start from the policy backbone with a fresh scalar head "
        f"and are trained offline on the same {plan['train_problems']} problems x {plan['samples_per_problem']} "
        f"trajectories, {plan['prm_epochs']} epochs at batch {plan['prm_batch_size']} (the same optimizer steps "
        f"for every objective), all with the recipe's PRM: read-out {prm.get('readout')}, head lr {prm.get('lr')}, "
        f"backbone lr {prm.get('backbone_lr')}. The {BASELINE} scores a prefix by exp(lowest token log-prob so far) "
        f"under the warm-start policy; every trained PRM starts from that backbone and is compared with it. ScalarPRM labels: a step is 1 if any of {plan['mc_samples']} completions from it "
        f"is right. Best-of-N: {plan['bon_problems']} held-out problems x {n_max} samples, accuracy at N averaged "
        f"over disjoint blocks of N. Search: beam width {plan['beam_width']}, {plan['search_problems']} held-out "
        f"problems, one step per generate call (stop string = the step delimiter).",
        "",
        "## PRM comparison",
        "",
        "BoN columns: accuracy of the solution the PRM ranks first; 'min' = min over reasoning-step values, "
        "'final' = value of the final state; the reference rows (majority vote, pass@N) need no verifier. Step "
        "columns, against the task's exact step labels (a prefix is sound if every step so far is right; measurement "
        "only, no method trains on them): step AUC = sound vs unsound prefixes, pooled; pairwise (min) = "
        "within-problem accuracy of ranking a right solution above a wrong one by the min step value; first-error "
        f"acc / F1 = ProcessBench's (first step i with V_i / discount^(T-1-i) < {FIRST_ERROR_THRESHOLD}, discount = "
        "the PRM's TD γ, 1 otherwise). Search columns: accuracy of PRM-guided step search with num_branch 2 and 16 "
        "(not run for the baseline). Smoothness: mean |V(s_t+1) - V(s_t)| / d over consecutive states (lower is "
        "smoother).",
        "",
        markdown_table(header, rows),
        "",
    ]
    parts += _findings(raw)
    ablations = [m for m in methods if m not in METHODS]
    if ablations:
        # No search columns: the ablations run Best-of-N, step metrics and smoothness only.
        no_search = tuple(g for g in MAIN_GETTERS if not g[0].startswith("search"))
        abl_header, abl_rows, _ = main_table(results, ablations, no_search, baseline=False, references=False)
        parts += ["## TD ablations (what the paper varies: n, γ, target network, shaping)", "",
                  markdown_table(abl_header, abl_rows), ""]
    step_header, step_rows, _ = main_table(results, methods, STEP_GETTERS, references=False)
    parts += ["## Step quality against exact step labels", "",
              "Every PRM and the untrained baseline on the held-out Best-of-N solutions. 'undiscounted' = the step "
              "AUC of V_i / discount^(T-1-i) (a TD-PRM's raw values shrink with the distance to the answer, which "
              "the pooled AUC mixes with soundness); 'across problems' = the same right-vs-wrong pairs pooled over "
              "all problems (a PRM that only learned which problems are hard scores well there, not within a "
              "problem); error-free acc = share of error-free solutions called error-free.", "",
              markdown_table(step_header, step_rows), ""]
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
    for label in [m[0] for m in methods] + [BASELINE]:
        for agg in aggs:
            per_n = [_per_seed(results, label, lambda e, i=i, a=agg: e["bon"]["accuracy"][f"prm/{a}"][i])
                     for i in range(len(sizes))]
            rows.append([label, agg] + [fmt_mean_std(v) for v in per_n])
            if agg == "min" and label in {m[0] for m in METHODS} | {BASELINE}:
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
            f"samples per step, fresh prompts every step, constant learning rate), seeds {plan['rl_seeds']}. Each seed "
            f"is one run, evaluated when it has used each fraction of the budget. Every arm starts from the recipe's "
            f"warm-up PRM (prm_warmup, cached per seed); the frozen arm keeps it as it is (prm.update=frozen), the "
            f"online arm goes on with TD updates on its rollouts.", "", "![RL](paper_rl.png)", "",
            markdown_table(header, rows), "", *_rl_findings(rl)]


def _rl_findings(rl: dict[str, Any]) -> list[str]:
    """The online PRM vs the same PRM frozen, and vs the rule reward alone, at the full budget (whatever the sign)."""
    full = {label: mean_std([r["at_budget"][-1] for r in runs.values()])[0] for label, runs in rl["methods"].items()}
    lines = []
    for other in (FROZEN_ARM, RL_METHODS[0][0]):
        a, b = full.get(ONLINE_ARM, math.nan), full.get(other, math.nan)
        if not (math.isnan(a) or math.isnan(b)):
            lines.append(f"- online TD-PRM minus {other}, all of the budget: {a - b:+.3f} ({a:.3f} vs {b:.3f})")
    return (["**At the full budget** (mean over seeds; positive = the online TD-PRM arm better):", "", *lines, ""]
            if lines else [])
