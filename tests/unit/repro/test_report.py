"""The paper report: step-metric columns, the log-prob baseline row, the reference rows and the frozen-PRM RL arm
hold the numbers of the results they are made from; every arm keeps the recipe's PRM recipe and warm-up."""

import dataclasses
import os

import pytest

from tdrm_rl.config import load_config
from tdrm_rl.repro.paper import check_prm_recipe
from tdrm_rl.repro.plan import (ABLATIONS, BASELINE, FROZEN_ARM, METHODS, ONLINE_ARM, PRM_RECIPE_FIELDS, QUICK,
                                RL_METHODS)
from tdrm_rl.repro.report import MAIN_COLUMNS, main_table, write_report

RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "recipes", "grpo_tdrm.yaml")
SIZES = [1, 2, 4]


def entry(step_auc: float, pairwise: float, bon_min: list[float], search: bool = True) -> dict:
    accuracy = {f"prm/{a}": list(bon_min) for a in ("last", "min", "mean", "product", "final")}
    accuracy["majority_vote"] = [bon_min[0], 0.6, 0.7]
    accuracy["pass@N"] = [bon_min[0], 0.8, 0.9]
    e = {"bon": {"N": SIZES, "accuracy": accuracy},
         "smoothness": {"smoothness_per_step": 0.1, "smoothness_per_token": 0.01, "td_error_by_step": [0.2, 0.1]},
         "step_metrics": {"step_auc": step_auc, "step_auc_undiscounted": step_auc, "pairwise/min": pairwise,
                          "pairwise/last": pairwise, "pairwise/final": pairwise, "across/min": 0.75,
                          "first_error_acc": 0.4, "first_error_correct_acc": 0.8, "first_error_f1": 0.8 * 0.4 * 2 / 1.2}}
    if search:
        e["search"] = {b: {"accuracy": 0.5, "tokens_per_problem": 100.0 * int(b)} for b in ("2", "4", "8", "16")}
    return e


def results() -> dict:
    seeds = {}
    for seed, shift in ((0, 0.0), (1, 0.1)):  # seed 1's step AUC is 0.1 higher
        methods = {label: entry(0.8 + shift, 0.7, [0.5, 0.55 + 0.01 * i, 0.6]) for i, (label, *_) in enumerate(METHODS)}
        methods[BASELINE] = entry(0.9 + shift, 0.85, [0.5, 0.6, 0.65], search=False)
        methods.update({label: entry(0.6, 0.6, [0.5, 0.5, 0.5], search=False) for label, *_ in ABLATIONS})
        seeds[seed] = {"methods": methods, "heldout_sample_accuracy": 0.5}
    rl = {"budget_steps": [1, 2, 4], "prompts": [4, 8, 16],
          "methods": {label: {0: {"warm_start": 0.5, "at_budget": [0.5, 0.55, 0.6 + 0.05 * i]}}
                      for i, (label, _) in enumerate(RL_METHODS)}}
    return {"plan": dataclasses.asdict(QUICK), "prm_recipe": {"readout": "logprob", "lr": 1e-4, "backbone_lr": 1e-5},
            "seeds": seeds, "rl": rl, "timings_s": {"total": 1.0}, "command": "tdrm-rl paper --quick"}


def test_the_prm_table_gives_step_metrics_as_mean_and_std_over_seeds_with_the_baseline_and_reference_rows():
    header, rows, _ = main_table(results(), METHODS)
    assert header == ["method", *MAIN_COLUMNS]
    by_label = {r[0]: dict(zip(header[1:], r[1:])) for r in rows}
    assert list(by_label) == [m[0] for m in METHODS] + [BASELINE, "majority vote (no verifier)", "pass@N (oracle)"]
    td = by_label[METHODS[1][0]]
    assert td["step AUC"] == "0.850 ± 0.071" and td["pairwise (min)"] == "0.700 ± 0.000"
    assert td["first-error acc"] == "0.400 ± 0.000" and td["first-error F1"] == "0.533 ± 0.000"
    assert td["BoN@N_max (min)"] == "0.600 ± 0.000"
    base = by_label[BASELINE]
    assert base["step AUC"] == "0.950 ± 0.071" and base["search@16"] == "n/a"
    vote = by_label["majority vote (no verifier)"]
    assert vote["BoN@1"] == "0.500 ± 0.000" and vote["BoN@N_max (min)"] == vote["BoN@N_max (final)"] == "0.700 ± 0.000"
    assert vote["step AUC"] == "-" and by_label["pass@N (oracle)"]["BoN@N_max (final)"] == "0.900 ± 0.000"


def test_the_report_has_the_step_quality_section_and_the_frozen_prm_rl_arm(tmp_path):
    write_report(results(), METHODS + ABLATIONS, str(tmp_path))
    text = (tmp_path / "paper.md").read_text()
    ablations = text[text.index("## TD ablations"):text.index("## Step quality")]
    assert "| method | BoN@1 | BoN@N_max (min) | BoN@N_max (final) | step AUC | pairwise (min) |" in ablations
    assert "search" not in ablations and f"| {ABLATIONS[0][0]} | 0.500 ± 0.000 |" in ablations
    assert "read-out logprob, head lr 0.0001, backbone lr 1e-05" in text
    section = text[text.index("## Step quality against exact step labels"):text.index("## Best-of-N, every")]
    assert f"| {BASELINE} | 0.950 ± 0.071 |" in section and f"| {ABLATIONS[-1][0]} | 0.600 ± 0.000 |" in section
    assert "- step AUC: +0.000 (0.850 vs 0.850)" in text  # TD-PRM minus ScalarPRM, the findings list
    rl = text[text.index("## RL data efficiency"):]
    assert f"| {FROZEN_ARM} | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.550 ± 0.000 | 0.700 ± 0.000 |" in rl
    assert f"online TD-PRM minus {FROZEN_ARM}, all of the budget: -0.050 (0.650 vs 0.700)" in rl
    assert f"online TD-PRM minus {RL_METHODS[0][0]}, all of the budget: +0.050 (0.650 vs 0.600)" in rl
    assert ONLINE_ARM in rl and (tmp_path / "paper_rl.png").stat().st_size > 1000


def test_every_paper_arm_trains_the_prm_with_the_recipes_improved_prm_settings():
    got = check_prm_recipe(RECIPE, [], METHODS + ABLATIONS, RL_METHODS)
    prm = load_config(RECIPE).prm
    assert got == {f: getattr(prm, f) for f in PRM_RECIPE_FIELDS}
    assert got["readout"] == "logprob" and got["backbone_lr"] is not None and got["backbone_lr"] < got["lr"]
    # A user's override reaches every arm alike.
    assert check_prm_recipe(RECIPE, ["prm.lr=3e-4"], METHODS, RL_METHODS)["lr"] == 3e-4


def test_an_arm_that_overrides_the_prm_recipe_or_the_warm_up_is_refused():
    with pytest.raises(ValueError, match="overrides the PRM recipe"):
        check_prm_recipe(RECIPE, [], METHODS + (("old ScalarPRM", "scalar", ("prm.lr=5e-4",)),), RL_METHODS)
    with pytest.raises(ValueError, match="overrides the PRM recipe"):
        check_prm_recipe(RECIPE, [], METHODS, RL_METHODS + (("hidden read-out", ("prm.readout=hidden",)),))
    with pytest.raises(ValueError, match="overrides prm_warmup"):
        check_prm_recipe(RECIPE, [], METHODS, RL_METHODS + (("cold PRM", ("prm_warmup.enabled=false",)),))
