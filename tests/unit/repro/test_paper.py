"""`make paper` resumes: a finished seed or RL run is kept on disk and reused only under the same settings."""

import json

from tdrm_rl.repro.paper import REUSED, Timer, _finished_part


def test_a_finished_part_is_reused_under_the_same_key_and_redone_under_another(tmp_path):
    calls = []

    def run(work):
        calls.append(work)
        return {"accuracy": 0.25 * len(calls)}

    work = tmp_path / "seed0"
    work.mkdir()
    logs = []
    first = _finished_part(str(work), {"seed": 0, "plan": {"n": 2}}, logs.append, run)
    again = _finished_part(str(work), {"seed": 0, "plan": {"n": 2}}, logs.append, run)
    assert first == again == {"accuracy": 0.25} and len(calls) == 1
    assert any("reused" in m for m in logs)
    changed = _finished_part(str(work), {"seed": 0, "plan": {"n": 4}}, logs.append, run)
    assert changed == {"accuracy": 0.5} and len(calls) == 2
    assert json.loads((work / "result.json").read_text())["key"] == {"seed": 0, "plan": {"n": 4}}


def test_a_reused_part_still_counts_its_run_time(tmp_path):
    def run(work):
        return {"accuracy": 1.0}

    _finished_part(str(tmp_path), {"seed": 1}, lambda m: None, run)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["seconds"] >= 0.0
    saved["seconds"] = 123.0  # as if the first run took two minutes
    (tmp_path / "result.json").write_text(json.dumps(saved))
    timer = Timer()
    assert _finished_part(str(tmp_path), {"seed": 1}, lambda m: None, run, timer) == {"accuracy": 1.0}
    assert timer.seconds == {REUSED: 123.0}
