"""`make paper`'s quick variant end to end (real rollouts, PRM training, step metrics, search, RL), then the report."""

import json
import math
import os
import re

import yaml

from tests.e2e.conftest import RECIPE
from tdrm_rl.algos.prm_metrics import step_auc
from tdrm_rl.cli.main import main
from tdrm_rl.config import load_config
from tdrm_rl.data.rollout_file import exact_step_labels, read_jsonl
from tdrm_rl.prm_tools.offline import logprob_verifier_records
from tdrm_rl.repro.plan import BASELINE, FROZEN_ARM, METHODS, ONLINE_ARM, PRM_RECIPE_FIELDS, QUICK, RL_METHODS
from tdrm_rl.repro.report import MAIN_COLUMNS, REFERENCES, STEP_GETTERS
from tdrm_rl.repro.paper import rl_run_dir
from tdrm_rl.rl.tracking import read_metrics
from tdrm_rl.tasks import get_task

CELL = re.compile(r"^(-?\d+\.\d+) ± (\d+\.\d+)$")


def table_after(text: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The first markdown table after `heading`: header cells and body rows."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[0], [r for r in rows[2:]]


def cell_values(row: list[str]) -> list[tuple[float, float]]:
    out = []
    for cell in row:
        m = CELL.match(cell)
        assert m, f"not a 'mean ± std' number: {cell!r} in {row}"
        out.append((float(m.group(1)), float(m.group(2))))
    return out


def test_paper_quick_writes_the_report(ray_local, tmp_path, tiny_cache, tiny_policy):
    report, work = tmp_path / "report", tmp_path / "work"
    rc = main(["paper", RECIPE, "--quick", "--report-dir", str(report), "--work-dir", str(work),
               f"model.cache_dir={tiny_cache}"])
    assert rc == 0
    check_paper_outputs(report, work)


def check_paper_outputs(report, work) -> None:
    """What a user reads in the quick report (REPORT_DIR) and relies on in its work folder (WORK_DIR)."""
    text = (report / "paper.md").read_text()
    assert "Made by: `tdrm-rl paper" in text and "--quick" in text

    header, rows = table_after(text, "## PRM comparison")
    assert header == ["method", *MAIN_COLUMNS]
    # One row per method, the untrained log-prob baseline, then majority vote and pass@N.
    assert [r[0] for r in rows] == [m[0] for m in METHODS] + [BASELINE] + [name for name, _ in REFERENCES]
    search = [i for i, c in enumerate(MAIN_COLUMNS) if c.startswith("search")]
    values = {r[0]: cell_values(r[1:]) for r in rows[:len(METHODS)]}
    values[BASELINE] = cell_values([c for i, c in enumerate(rows[len(METHODS)][1:]) if i not in search])
    assert all(rows[len(METHODS)][1 + i] == "n/a" for i in search)  # no step search with the baseline
    for label, cells in values.items():
        cols = [c for i, c in enumerate(MAIN_COLUMNS) if label != BASELINE or i not in search]
        for (mean, std), col in zip(cells, cols):
            assert 0.0 <= mean <= 1.0 and math.isfinite(std), (label, col, mean, std)
    # Best-of-1 picks the sample itself: every PRM, the baseline, majority vote and pass@1 get the same number,
    # the held-out sample accuracy.
    references = {r[0]: r[1:] for r in rows[len(METHODS) + 1:]}
    bon1 = {cells[0] for cells in values.values()} | {cell_values(r[:1])[0] for r in references.values()}
    assert len(bon1) == 1
    raw = json.loads((report / "paper.json").read_text())
    sample_acc = [s["heldout_sample_accuracy"] for s in raw["seeds"].values()]
    assert abs(next(iter(bon1))[0] - sum(sample_acc) / len(sample_acc)) < 1e-3
    assert len(raw["seeds"]) == len(QUICK.seeds)
    # pass@N_max is at least majority vote and every PRM's Best-of-N_max.
    n_max = MAIN_COLUMNS.index("BoN@N_max (min)")
    pass_n = cell_values([references["pass@N (oracle)"][n_max]])[0][0]
    vote_n = cell_values([references["majority vote (no verifier)"][n_max]])[0][0]
    assert all(pass_n >= v - 1e-9 for v in [vote_n] + [cells[n_max][0] for cells in values.values()])

    # Every PRM arm trained with the recipe's PRM settings (the improved recipe: log-prob read-out).
    cfg = load_config(RECIPE)
    assert raw["prm_recipe"] == {f: getattr(cfg.prm, f) for f in PRM_RECIPE_FIELDS}
    assert raw["prm_recipe"]["readout"] == "logprob"
    for seed in raw["seeds"].values():
        assert list(seed["methods"]) == [m[0] for m in METHODS] + [BASELINE]
        for label, *_ in METHODS:
            entry = seed["methods"][label]
            assert entry["prm_recipe"] == raw["prm_recipe"]
            assert entry["train"]["optimizer_steps"] == seed["methods"][METHODS[0][0]]["train"]["optimizer_steps"]
            assert sorted(entry["search"]) == ["16", "2", "4", "8"]
            toks = [entry["search"][b]["tokens_generated"] for b in ("2", "4", "8", "16")]
            assert 0 < toks[0] < toks[-1]  # 16 branches per step generate more than 2

    # The step-quality table: every PRM and the baseline, every column a measured number in [0, 1].
    header, rows = table_after(text, "## Step quality against exact step labels")
    assert header == ["method", *(name for name, _ in STEP_GETTERS)]
    assert [r[0] for r in rows] == [m[0] for m in METHODS] + [BASELINE]
    for r in rows:
        assert all(0.0 <= mean <= 1.0 for mean, _ in cell_values(r[1:])), r
    # The baseline's step AUC is the one its held-out rollouts give, recomputed here from the files.
    policy = json.loads((work / f"seed{QUICK.seeds[0]}" / "result.json").read_text())["key"]["policy"]
    aucs = []
    for seed in QUICK.seeds:
        records = read_jsonl(str(work / f"seed{seed}" / "eval_rollouts.jsonl"))
        batch = logprob_verifier_records(policy, records, cfg.data.step_delimiter)
        labels = exact_step_labels(records, get_task(cfg.data), batch.step_mask)
        aucs.append(step_auc(batch.step_logits, labels, batch.step_mask))
        assert abs(aucs[-1] - raw["seeds"][str(seed)]["methods"][BASELINE]["step_metrics"]["step_auc"]) < 1e-9
    assert abs(values[BASELINE][MAIN_COLUMNS.index("step AUC")][0] - sum(aucs) / len(aucs)) < 1e-3

    header, rows = table_after(text, "## RL data efficiency")
    assert [r[0] for r in rows] == [m[0] for m in RL_METHODS]
    for r in rows:
        for mean, std in cell_values(r[1:]):
            assert 0.0 <= mean <= 1.0
    # Every RL arm starts from the same warm-up PRM (as `tdrm-rl train`); the frozen arm never updates it.
    starts, updated = {}, {}
    for label, _ in RL_METHODS:
        run = rl_run_dir(str(work / "rl"), label, QUICK.rl_seeds[0])
        with open(os.path.join(run, "config.yaml")) as f:
            starts[label] = yaml.safe_load(f)["model"]["prm_path"]
        updated[label] = {r["prm/updated"] for r in read_metrics(os.path.join(run, "metrics.jsonl"))
                          if "prm/updated" in r}
    assert len(set(starts.values())) == 1 and "prm-warmup-" in next(iter(starts.values()))
    assert updated[ONLINE_ARM] == {1.0} and updated[FROZEN_ARM] == {0.0}
    for png in ("paper_bon.png", "paper_search.png", "paper_td_error.png", "paper_rl.png"):
        assert os.path.getsize(report / png) > 1000, png
