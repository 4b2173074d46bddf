"""The run report reads a run folder and states its numbers: before/after accuracy, stage shares, PRM trends."""

from __future__ import annotations

import json
import os

import pytest

from tdrm_rl.repro.run_report import build_report, main


def _run_folder(tmp_path, evals: dict[int, float], steps: int = 4) -> str:
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 0, "eval/greedy_accuracy": evals[0]}]
    for s in range(1, steps + 1):
        rows.append({"step": s, "timing_s/step": 10.0, "timing_s/rollout": 4.0, "timing_s/update": 5.0,
                     "timing_s/policy_update": 4.5, "reward/rule_mean": 0.1 * s,
                     "prm/ranking_accuracy": 0.5 + 0.1 * s if s < 4 else None})
        if s in evals:
            rows.append({"step": s, "eval/greedy_accuracy": evals[s]})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"eval_problems": 100, "rl_seconds": 120.0}))
    (run / "command.json").write_text(json.dumps({"command": "train", "recipe": "r.yaml", "overrides": ["a.b=1"]}))
    return str(run)


def test_report_states_before_after_stage_shares_and_trends(tmp_path):
    run = _run_folder(tmp_path, {0: 0.50, 2: 0.54, 4: 0.58})
    out = str(tmp_path / "reports" / "r.md")
    numbers = build_report(run, out, "T", "make x")
    assert numbers["before"] == pytest.approx(0.50)
    assert numbers["after"] == pytest.approx(0.56)  # mean of the last two evaluations
    assert numbers["gain_points"] == pytest.approx(6.0)
    assert numbers["se_points"] == pytest.approx(5.0)  # sqrt(0.25 / 100)
    text = open(out).read()
    assert "**+6.0 points**" in text and "`make x`" in text and "`tdrm-rl train r.yaml a.b=1`" in text
    assert "| `rollout` (driver stage) | 4.0 | 40% |" in text
    assert "| `policy_update` (inside a worker) | 4.5 | 45% |" in text
    # first 2 vs last 2 of 4 steps: ranking accuracy 0.65 -> 0.8 (undefined at step 4: no mixed group)
    assert "| PRM within-group ranking accuracy | `prm/ranking_accuracy` | 0.650 | 0.800 (1 of 2 steps) |" in text
    assert "| train accuracy (sampled, rule reward) | `reward/rule_mean` | 0.150 | 0.350 |" in text
    assert os.path.getsize(numbers["plot"]) > 1000 and "r_curves.png" in text


def test_a_folder_without_an_after_evaluation_is_refused_in_one_line(tmp_path, capsys):
    run = _run_folder(tmp_path, {0: 0.5})
    assert main([run, "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 held-out evaluation" in err
    assert not os.path.exists(tmp_path / "r.md")
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "r.md")]) == 2
    assert "not a tdrm-rl run folder" in capsys.readouterr().err
