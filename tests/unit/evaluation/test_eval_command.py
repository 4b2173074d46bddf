"""`tdrm-rl eval` on a miniature warm start: its numbers match a direct computation (transformers generate, the
task's checker, pass@k / maj@k by hand), a run folder means its newest complete checkpoint, a task variant by
override evaluates other problems, and --prm reranks the samples as the PRM's own scores say."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

import pytest
import torch

from tdrm_rl.cli.main import main
from tdrm_rl.tasks.arith import ArithTask

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
RECIPE = os.path.join(ROOT, "recipes", "grpo_tdrm.yaml")
# The miniature warm start of tests/unit/models/test_sft.py: ~20 s of SFT, some answers right, some wrong.
MINI = ["data.num_ops=1", "data.operand_max=5", "data.eval_size=12", "model.hidden_size=32", "model.num_layers=2",
        "model.intermediate_size=64", "model.num_heads=2", "model.num_kv_heads=1", "sft.steps=150",
        "sft.batch_size=32", "sft.warmup_steps=10", "sft.lr=5e-3", "sft.torch_threads=1", "rollout.max_new_tokens=24",
        "trainer.progress=false", "trainer.torch_threads=1"]
SAMPLES = 4


def run_eval(out, cache, *extra, flags=(), default_out=None):
    """`tdrm-rl eval` with --out `out` (None: its default, which must be `default_out`); returns eval.json."""
    code = main(["eval", RECIPE, *MINI, f"model.cache_dir={cache}", *extra, "--samples", str(SAMPLES),
                 *(["--out", str(out)] if out else []), *flags])
    assert code == 0
    return json.load(open(os.path.join(out or default_out, "eval.json")))


def read_lines(path):
    return [json.loads(line) for line in open(path)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("eval-cache"))


@pytest.fixture(scope="module")
def default_eval(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("eval")
    return out, run_eval(out, cache)


def direct_greedy(policy_path, problems, max_new_tokens=24):
    """Greedy responses one problem at a time with plain transformers: no tdrm_rl generation code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy_path)
    model = AutoModelForCausalLM.from_pretrained(policy_path).eval()
    texts = []
    for p in problems:
        ids = torch.tensor([tok(p.prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        texts.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return texts


def by_hand(outcomes, preds, k):
    """pass@k and maj@k over the disjoint blocks of k samples of each problem, with loops."""
    passed, majority = [], []
    for row, answers in zip(outcomes, preds):
        for start in range(0, len(row) - len(row) % k, k):
            block, votes = row[start:start + k], [a for a in answers[start:start + k]]
            passed.append(float(max(block)))
            counts = Counter(a for a in votes if a is not None)
            if not counts:
                majority.append(0.0)
                continue
            winner = next(a for a in votes if a is not None and counts[a] == max(counts.values()))
            majority.append(float(block[votes.index(winner)]))
    return sum(passed) / len(passed), sum(majority) / len(majority)


def test_eval_numbers_match_a_direct_computation(default_eval):
    out, report = default_eval
    task = ArithTask(num_ops=1, operand_max=5, seed=0)
    problems = task.eval_problems(12)
    greedy = read_lines(os.path.join(out, "greedy.jsonl"))
    assert [g["prompt"] for g in greedy] == [p.prompt for p in problems]
    texts = direct_greedy(report["checkpoint"], problems)
    assert [g["response"] for g in greedy] == texts
    direct = sum(task.verify(t, p.answer) for t, p in zip(texts, problems)) / len(problems)
    assert report["greedy_accuracy"] == pytest.approx(direct)

    samples = read_lines(os.path.join(out, "samples.jsonl"))
    assert len(samples) == 12 * SAMPLES and [s["problem_id"] for s in samples] == [i // SAMPLES for i in range(48)]
    outcomes = [[task.verify(s["response"], problems[i].answer) for s in samples[i * SAMPLES:(i + 1) * SAMPLES]]
                for i in range(12)]
    assert [s["outcome"] for s in samples] == [o for row in outcomes for o in row]
    preds = [[task.extract_answer(s["response"]) for s in samples[i * SAMPLES:(i + 1) * SAMPLES]] for i in range(12)]
    assert report["sampled_accuracy"] == pytest.approx(sum(map(sum, outcomes)) / 48)
    assert list(report["pass@k"]) == ["1", "2", "4"] == list(report["maj@k"])
    for k in (1, 2, 4):
        pass_k, maj_k = by_hand(outcomes, preds, k)
        assert report["pass@k"][str(k)] == pytest.approx(pass_k)
        assert report["maj@k"][str(k)] == pytest.approx(maj_k)
    # the miniature warm start is neither always right nor always wrong: the numbers above say something
    assert 0 < report["sampled_accuracy"] < 1 and report["pass@k"]["4"] >= report["pass@k"]["1"]


def test_a_task_variant_by_override_evaluates_its_own_problems(default_eval, cache, tmp_path):
    _, base = default_eval
    report = run_eval(tmp_path, cache, f"model.policy_path={base['checkpoint']}", "data.num_ops=2", "data.seed=7")
    assert report["checkpoint"] == base["checkpoint"]
    greedy = read_lines(os.path.join(tmp_path, "greedy.jsonl"))
    problems = ArithTask(num_ops=2, operand_max=5, seed=7).eval_problems(12)
    assert [g["prompt"] for g in greedy] == [p.prompt for p in problems]
    assert report["greedy_accuracy"] == pytest.approx(sum(g["outcome"] for g in greedy) / 12)


def test_a_run_folder_means_its_newest_complete_checkpoint(default_eval, cache, tmp_path, capsys):
    from tdrm_rl.rl.checkpoint import write_checkpoint
    from tests.unit.conftest import save_tiny_policy

    out, base = default_eval
    run = tmp_path / "run"
    shape = [o for o in MINI if o.startswith("model.")]
    write_checkpoint(str(run), 1, {}, lambda d: save_tiny_policy(os.path.join(d, "policy"), shape), "", keep=0)
    write_checkpoint(str(run), 2, {}, lambda d: shutil.copytree(base["checkpoint"], os.path.join(d, "policy")), "",
                     keep=0)
    os.makedirs(run / "checkpoints" / "step_000003" / "policy")  # no COMPLETE marker: a write cut short
    report = run_eval(None, cache, f"model.policy_path={run}", default_out=run / "eval")  # beside the run's metrics
    assert report["checkpoint"] == str(run / "checkpoints" / "step_000002")
    assert report["greedy_accuracy"] == base["greedy_accuracy"]

    empty = tmp_path / "empty"
    os.makedirs(empty / "checkpoints")
    capsys.readouterr()
    assert main(["eval", RECIPE, *MINI, f"model.policy_path={empty}", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no complete checkpoint" in err and str(empty) in err and len(err.splitlines()) == 1


def hand_aggregate(values, agg):
    """One score per solution from its step values V_0 .. V_{T-1} (the answer step last), with loops."""
    if not values:
        return 0.0
    reasoning = values[:-1] or values  # a one-step solution: its final state
    return min(reasoning) if agg == "min" else reasoning[-1]


def test_prm_reranked_best_of_n_picks_what_the_prm_scores_highest(default_eval, cache, tmp_path):
    from tdrm_rl.config import load_config
    from tdrm_rl.data.rollout_file import read_jsonl, records_batch
    from tdrm_rl.models.load import load_prm, prm_step_logits
    from tdrm_rl.prm_tools.offline import local_prm_worker

    _, base = default_eval
    cfg = load_config(RECIPE, MINI)
    prm_dir = local_prm_worker(cfg, base["checkpoint"], init_from_policy=True).save(str(tmp_path / "prm"))
    report = run_eval(tmp_path / "e", cache, f"model.policy_path={base['checkpoint']}",
                      flags=["--prm", prm_dir, "--agg", "min,last"])
    assert report["sampled_accuracy"] == base["sampled_accuracy"]  # the same seeded samples as without --prm
    records = read_jsonl(str(tmp_path / "e" / "samples.jsonl"))
    model, tok = load_prm(prm_dir, init_from_policy=False)
    b = records_batch(records, tok, cfg.data.step_delimiter)
    with torch.no_grad():
        logits = prm_step_logits(model.eval(), b.input_ids, b.attention_mask, b.step_ends, b.step_mask,
                                 b.response_mask)
    values = [torch.sigmoid(logits[i][b.step_mask[i].bool()]).tolist() for i in range(len(records))]
    assert set(report["bon@k"]) == {"min", "last"}
    for agg in ("min", "last"):
        scores = [hand_aggregate(v, agg) for v in values]
        for k in (1, 2, 4):
            picked = []
            for p in range(12):
                for start in range(0, SAMPLES, k):
                    rows = range(p * SAMPLES + start, p * SAMPLES + start + k)
                    best = max(rows, key=lambda r: (scores[r], -r))  # the first of equal scores
                    picked.append(records[best].outcome)
            assert report["bon@k"][agg][str(k)] == pytest.approx(sum(picked) / len(picked)), (agg, k)
    assert report["bon@k"]["min"]["1"] == pytest.approx(report["pass@k"]["1"])  # one sample: nothing to rerank
