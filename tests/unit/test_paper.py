"""`make paper` resumes: a finished seed or RL run is kept on disk and reused only under the same settings."""

import json

from tdrm_rl.paper import _finished_part


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
