"""Best-of-N: step-value aggregation, selection, majority vote and pass@N on a hand-made rollouts file."""

from __future__ import annotations

import math

import pytest
import torch

from tdrm_rl.prm_tools.bon import (aggregate_steps, best_of_n_accuracy, bon_sizes, majority_vote_accuracy, pass_at_k)
from tdrm_rl.prm_tools.offline import bon_eval
from tdrm_rl.data.rollout_file import Trajectory, read_jsonl, records_batch, write_jsonl


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_aggregations_read_the_documented_steps() -> None:
    v = [[0.9, 0.2, 0.6, 0.7], [0.5, 0.8, 0.0, 0.0], [0.3, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    z = torch.tensor([[logit(x) if x > 0 else 0.0 for x in row] for row in v])
    got = {m: aggregate_steps(z, mask, m).tolist() for m in ("last", "min", "mean", "product", "final")}
    # Row 0: reasoning steps 0.9, 0.2, 0.6; final state 0.7. Row 1: reasoning 0.5; final 0.8.
    # Row 2: a single step, read as the final state by every mode. Row 3: no step -> 0.
    expected = {"last": [0.6, 0.5, 0.3, 0.0], "min": [0.2, 0.5, 0.3, 0.0], "mean": [1.7 / 3, 0.5, 0.3, 0.0],
                "product": [0.9 * 0.2 * 0.6, 0.5, 0.3, 0.0], "final": [0.7, 0.8, 0.3, 0.0]}
    for mode, want in expected.items():
        assert got[mode] == pytest.approx(want, abs=1e-6), mode
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_steps(z, mask, "max")


def test_selection_majority_and_pass_at_k_by_blocks() -> None:
    outcome = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float32)
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.4], [0.7, 0.7, 0.2, 0.3]])
    # N=1: the samples themselves -> mean outcome = 2/8.
    assert best_of_n_accuracy(scores, outcome, 1) == pytest.approx(0.25)
    # N=2 blocks: p0 {0.1,0.9}->right, {0.5,0.4}->wrong; p1 {0.7,0.7} tie -> first (wrong), {0.2,0.3}->right.
    assert best_of_n_accuracy(scores, outcome, 2) == pytest.approx(0.5)
    # N=4: p0 picks 0.9 (right), p1 picks the first 0.7 (wrong).
    assert best_of_n_accuracy(scores, outcome, 4) == pytest.approx(0.5)
    assert pass_at_k(outcome, 4) == 1.0 and pass_at_k(outcome, 2) == pytest.approx(0.5)
    preds = [["3", "5", "3", None], ["1", None, "2", "2"]]
    # N=4: p0 "3" wins 2:1 (wrong), p1 "2" wins 2:1 -> its first occurrence, index 2, is wrong.
    assert majority_vote_accuracy(preds, outcome, 4) == 0.0
    # N=2 blocks: p0 {"3","5"} tie -> "3" wrong; {"3",None} -> "3" wrong; p1 {"1",None} wrong; {"2","2"} -> index 2.
    assert majority_vote_accuracy(preds, outcome, 2) == 0.0
    assert bon_sizes(8) == [1, 2, 4, 8] and bon_sizes(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError):
        best_of_n_accuracy(scores, outcome, 5)


def _traj(tok, pid: int, response: str, answer: str) -> Trajectory:
    from tdrm_rl.tasks.arith import extract_boxed, verify

    prompt = f"Start with {pid}: +1\n"
    return Trajectory(problem_id=pid, prompt=prompt, answer=answer, response=response,
                      prompt_ids=tok(prompt, add_special_tokens=False)["input_ids"],
                      response_ids=tok(response, add_special_tokens=False)["input_ids"],
                      steps=response.split("\n\n"), outcome=verify(response, answer), pred=extract_boxed(response))


def test_bon_eval_on_a_hand_made_file(tok, tmp_path) -> None:
    rows = [_traj(tok, 0, "1+1=2\n\n\\boxed{2}", "2"), _traj(tok, 0, "1+1=3\n\n\\boxed{3}", "2"),
            _traj(tok, 1, "2+1=3\n\n\\boxed{3}", "3"), _traj(tok, 1, "2+1=4\n\n\\boxed{4}", "3")]
    path = write_jsonl(str(tmp_path / "r.jsonl"), rows)
    records = read_jsonl(path)
    assert [r.outcome for r in records] == [1.0, 0.0, 1.0, 0.0]
    batch = records_batch(records, tok)
    assert batch.step_mask.sum(1).tolist() == [2, 2, 2, 2]
    # PRM "good": high final value on right answers; PRM "bad": the reverse, but a high value before the
    # wrong answer's last step on problem 1 only.
    good = torch.tensor([[logit(0.5), logit(0.9)], [logit(0.5), logit(0.1)],
                         [logit(0.2), logit(0.8)], [logit(0.6), logit(0.3)]])
    bad = torch.tensor([[logit(0.5), logit(0.1)], [logit(0.5), logit(0.9)],
                        [logit(0.2), logit(0.1)], [logit(0.6), logit(0.9)]])
    scored = {}
    for name, z in (("good", good), ("bad", bad)):
        b = records_batch(records, tok)
        b.step_logits = z
        scored[name] = b
    out = bon_eval(scored, records, aggregations=("final", "last"))
    assert out["N"] == [1, 2] and out["problems"] == 2
    acc = out["accuracy"]
    assert acc["good/final"] == [0.5, 1.0]
    assert acc["bad/final"] == [0.5, 0.0]
    # "last" reads the state before the answer: problem 0 ties (first wins, right), problem 1 picks 0.6 (wrong).
    assert acc["good/last"] == [0.5, 0.5] and acc["bad/last"] == [0.5, 0.5]
    assert acc["majority_vote"] == [0.5, 1.0]  # 1:1 ties -> the first sample, here the right one
    assert acc["pass@N"] == [0.5, 1.0]


def test_bad_rollouts_files_name_the_problem(tmp_path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"problem_id": 0}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: missing field"):
        read_jsonl(str(p))
    p.write_text("not json\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_jsonl(str(p))
    with pytest.raises(ValueError, match="not found"):
        read_jsonl(str(tmp_path / "missing.jsonl"))
