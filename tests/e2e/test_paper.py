"""`make paper`'s quick variant end to end (real rollouts, PRM training, search, RL), then the report."""

import json
import math
import os
import re

from tests.e2e.conftest import RECIPE
from tdrm_rl.cli.main import main
from tdrm_rl.repro.plan import METHODS, QUICK, RL_METHODS
from tdrm_rl.repro.report import MAIN_COLUMNS

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
    text = (report / "paper.md").read_text()
    assert "Made by: `tdrm-rl paper" in text and "--quick" in text

    header, rows = table_after(text, "## PRM comparison")
    assert header == ["method", *MAIN_COLUMNS]
    assert [r[0] for r in rows] == [m[0] for m in METHODS]  # one row per method
    values = {r[0]: cell_values(r[1:]) for r in rows}
    for label, cells in values.items():
        for (mean, std), col in zip(cells, MAIN_COLUMNS):
            assert 0.0 <= mean <= 1.0 and math.isfinite(std), (label, col, mean, std)
    # Best-of-1 picks the sample itself: every PRM gets the same number, the held-out sample accuracy.
    bon1 = {cells[0] for cells in values.values()}
    assert len(bon1) == 1
    raw = json.loads((report / "paper.json").read_text())
    sample_acc = [s["heldout_sample_accuracy"] for s in raw["seeds"].values()]
    assert abs(next(iter(bon1))[0] - sum(sample_acc) / len(sample_acc)) < 1e-3
    assert len(raw["seeds"]) == len(QUICK.seeds)
    for seed in raw["seeds"].values():
        for entry in seed["methods"].values():
            assert entry["train"]["optimizer_steps"] == seed["methods"][METHODS[0][0]]["train"]["optimizer_steps"]
            assert sorted(entry["search"]) == ["16", "2", "4", "8"]
            toks = [entry["search"][b]["tokens_generated"] for b in ("2", "4", "8", "16")]
            assert 0 < toks[0] < toks[-1]  # 16 branches per step generate more than 2

    header, rows = table_after(text, "## RL data efficiency")
    assert [r[0] for r in rows] == [m[0] for m in RL_METHODS]
    for r in rows:
        for mean, std in cell_values(r[1:]):
            assert 0.0 <= mean <= 1.0
    for png in ("paper_bon.png", "paper_search.png", "paper_td_error.png", "paper_rl.png"):
        assert os.path.getsize(report / png) > 1000, png
