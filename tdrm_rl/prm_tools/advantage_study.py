"""How the PRM term enters GRPO-style advantages, measured on scored rollouts with exact step labels.

Input: the `scores.jsonl` that `tdrm-rl bon` writes (one row per trajectory and PRM: problem_id, outcome,
values in [0, 1] per step, labels = exact step labels). Each problem's solutions form one group, as in RL.
For each estimator the blended reward R = w_rule * rule + w_prm * logit(v_before_answer) (the RL blend,
`algos.blend`) becomes advantages, split by the kind of group:

- all_right / all_wrong: the rule reward is constant, so every advantage comes from the PRM term. The
  mean |A| says how loud that term is; its correlation with the solution's sound-prefix fraction (steps
  before the first wrong one, from the exact labels) says whether it is signal (> 0) or noise (~ 0).
- mixed: right_above_wrong is the share of (right, wrong) pairs the advantages still order correctly;
  rule_share is |A of the rule term alone| / |A|.

    python -m tdrm_rl.prm_tools.advantage_study SCORES.jsonl --prm NAME [--w-rule 0.8 --w-prm 0.2]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from typing import Any, Iterable

import torch

from tdrm_rl.algos.blend import aggregate_prm, blend_rewards
from tdrm_rl.algos.estimators import drgrpo_advantages, grpo_advantages

__all__ = ["ESTIMATORS", "sound_prefix_fraction", "advantage_composition"]

ESTIMATORS = {"grpo": grpo_advantages, "drgrpo": drgrpo_advantages}


def sound_prefix_fraction(labels: list[int]) -> float:
    """Share of a solution's steps before its first unsound one (1.0 when every step is sound)."""
    first_bad = next((i for i, lab in enumerate(labels) if lab == 0), len(labels))
    return first_bad / max(len(labels), 1)


def _logits(values: list[float]) -> list[float]:
    return [math.log(min(max(v, 1e-6), 1 - 1e-6) / (1 - min(max(v, 1e-6), 1 - 1e-6))) for v in values]


def _corr(x: torch.Tensor, y: torch.Tensor) -> float | None:
    if x.numel() < 2 or float(x.std()) == 0 or float(y.std()) == 0:
        return None
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def advantage_composition(rows: Iterable[dict[str, Any]], w_rule: float, w_prm: float) -> dict[str, dict[str, Any]]:
    """{estimator: {group kind: {metric: mean over groups}, 'groups': {kind: count}}} for one PRM's rows."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[int(r["problem_id"])].append(r)
    acc: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for g in groups.values():
        rule = torch.tensor([float(r["outcome"]) for r in g], dtype=torch.float64)
        width = max(len(r["values"]) for r in g)
        logits = torch.zeros(len(g), width, dtype=torch.float64)
        mask = torch.zeros(len(g), width, dtype=torch.long)
        for i, r in enumerate(g):
            logits[i, :len(r["values"])] = torch.tensor(_logits(r["values"]), dtype=torch.float64)
            mask[i, :len(r["values"])] = 1
        prm = aggregate_prm(logits, mask, "before_answer")
        sound = torch.tensor([sound_prefix_fraction(r["labels"]) for r in g], dtype=torch.float64)
        ids = torch.zeros(len(g), dtype=torch.long)
        kind = "all_right" if rule.min() == 1 else "all_wrong" if rule.max() == 0 else "mixed"
        counts[kind] += 1
        for name, estimator in ESTIMATORS.items():
            adv = estimator(blend_rewards(rule, prm, w_rule, w_prm), ids).double()
            acc[(name, kind, "abs_adv")].append(float(adv.abs().mean()))
            if kind == "mixed":
                rule_adv = estimator(w_rule * rule, ids).double()
                acc[(name, kind, "rule_share")].append(float(rule_adv.abs().mean() / adv.abs().mean().clamp(min=1e-12)))
                right, wrong = adv[rule == 1], adv[rule == 0]
                acc[(name, kind, "right_above_wrong")].append(float((right[:, None] > wrong[None, :]).double().mean()))
                c = _corr(adv[rule == 0], sound[rule == 0])
            else:
                c = _corr(adv, sound)
            if c is not None:
                acc[(name, kind, "corr_sound_prefix")].append(c)
    out: dict[str, dict[str, Any]] = {}
    for (name, kind, metric), xs in acc.items():
        entry = out.setdefault(name, {"groups": dict(counts)}).setdefault(kind, {})
        entry[metric] = sum(xs) / len(xs)
        if metric == "corr_sound_prefix":
            entry["corr_groups"] = len(xs)  # groups whose advantages and sound prefixes both vary
    return out


def _table(study: dict[str, dict[str, Any]]) -> str:
    lines = ["| estimator | group kind (count) | mean abs A | corr(A, sound prefix) | right above wrong | rule share |",
             "|---|---|---|---|---|---|"]
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for name, kinds in study.items():
        for kind in ("all_wrong", "all_right", "mixed"):
            m = kinds.get(kind, {})
            lines.append(f"| {name} | {kind} ({kinds['groups'].get(kind, 0)}) | {fmt(m.get('abs_adv'))} | "
                         f"{fmt(m.get('corr_sound_prefix'))} ({m.get('corr_groups', 0)} groups) | {fmt(m.get('right_above_wrong'))} | "
                         f"{fmt(m.get('rule_share'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scores", help="scores.jsonl from `tdrm-rl bon` (with exact step labels)")
    p.add_argument("--prm", required=True, help="which PRM's rows to study (its --prm NAME in bon)")
    p.add_argument("--w-rule", type=float, default=0.8)
    p.add_argument("--w-prm", type=float, default=0.2)
    args = p.parse_args(argv)
    with open(args.scores) as f:
        rows = [r for r in map(json.loads, f) if r["prm"] == args.prm and r.get("labels") is not None]
    if not rows:
        raise SystemExit(f"{args.scores}: no rows with step labels for PRM {args.prm!r}")
    print(_table(advantage_composition(rows, args.w_rule, args.w_prm)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
