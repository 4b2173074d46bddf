"""Exact step labels of the arith task and the step metrics (step AUC, first error) against loop references."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tdrm_rl.algos.prm_metrics import (auc, first_error_index, first_error_metrics, predicted_first_error, step_auc,
                                 step_auc_by_index, step_quality)
from tdrm_rl.data.rollout_file import Trajectory, exact_step_labels, records_batch
from tdrm_rl.data.segment import split_steps
from tdrm_rl.tasks.arith import ArithTask, parse_prompt, step_labels

PROMPT = "Start with 12: +5 *3 -7\n"


@pytest.mark.parametrize("response, want", [
    ("12+5=17\n\n17*3=51\n\n51-7=44\n\n\\boxed{44}", [1, 1, 1, 1]),  # the worked solution
    ("12 + 5 = 17\n\n17*3 = 51\n\n51-7=44\n\n\\boxed{44}", [1, 1, 1, 1]),  # spaces are fine
    ("12+5=18\n\n18*3=54\n\n54-7=47\n\n\\boxed{47}", [0, 0, 0, 0]),  # wrong result at step 0
    ("12+5=17\n\n17*3=52\n\n52-7=45\n\n\\boxed{45}", [1, 0, 0, 0]),  # wrong result at step 1
    ("12+5=17\n\n17*3=51\n\n51-7=44\n\n\\boxed{45}", [1, 1, 1, 0]),  # wrong copy of the answer
    ("12+5=17\n\n17*4=68\n\n68-7=61\n\n\\boxed{61}", [1, 0, 0, 0]),  # wrong operand (arithmetic right)
    ("12+5=17\n\n18*3=54\n\n54-7=47\n\n\\boxed{47}", [1, 0, 0, 0]),  # wrong carried value
    ("12+5=17\n\n17-3=14\n\n14-7=7\n\n\\boxed{7}", [1, 0, 0, 0]),  # wrong operator
    ("12+5=17\n\n17*3=51\n\n\\boxed{51}", [1, 1, 0]),  # answers early
    ("12+5=17\n\n17*3=51\n\n51-7=44", [1, 1, 1]),  # right so far, never answers
    ("12+5=17\n\n17*3=51\n\n51-7=44\n\n\\boxed{44}\n\n44+1=45", [1, 1, 1, 1, 0]),  # a step after the answer
    ("12+5=17\n\nseventeen\n\n51-7=44\n\n\\boxed{44}", [1, 0, 0, 0]),  # not an equation
    ("12+5=17\n\n17*3=51\n\n51-7=30\n\n\\boxed{44}", [1, 1, 0, 0]),  # right answer after a wrong step stays unsound
])
def test_step_labels_hand_made(response, want):
    assert step_labels(PROMPT, split_steps(response), "44") == want


def test_step_labels_of_every_worked_solution_are_sound_and_a_flipped_digit_is_caught():
    task = ArithTask(num_ops=4, operand_max=20, seed=3)
    rng = random.Random(0)
    for p in task.sample_train(200, rng):
        steps = split_steps(p.solution)
        assert task.step_labels(p.prompt, steps, p.answer) == [1] * len(steps)
        i = rng.randrange(len(steps) - 1)  # corrupt the result of one reasoning step
        lhs, res = steps[i].split("=")
        steps[i] = f"{lhs}={int(res) + 1}"
        assert task.step_labels(p.prompt, steps, p.answer) == [1] * i + [0] * (len(steps) - i)


def test_parse_prompt_and_non_arith_prompt():
    assert parse_prompt(PROMPT) == (12, [("+", 5), ("*", 3), ("-", 7)])
    assert step_labels("What is 2+2?", ["4"], "4") is None


def test_exact_step_labels_align_with_the_token_step_ends(tok):
    responses = ["12+5=17\n\n17*3=52\n\n52-7=45\n\n\\boxed{45}", "12+5=17\n\n17*3=51\n\n\\boxed{51}",
                 "12+5=17\n\n17*3=51\n\n51-7=44\n\n\\boxed{44}"]
    records = [Trajectory(problem_id=0, prompt=PROMPT, answer="44", response=r,
                          prompt_ids=tok.encode(PROMPT, add_special_tokens=False),
                          response_ids=tok.encode(r, add_special_tokens=False), steps=split_steps(r),
                          outcome=float(r.endswith("{44}"))) for r in responses]
    batch = records_batch(records, tok)
    labels = exact_step_labels(records, ArithTask(num_ops=3, operand_max=12), batch.step_mask)
    assert labels.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


# ----- metrics against plain loops ---------------------------------------------------------------------

def ref_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return math.nan
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def random_case(seed, B=30, S=5):
    g = torch.Generator().manual_seed(seed)
    T = torch.randint(1, S + 1, (B,), generator=g)
    mask = (torch.arange(S)[None, :] < T[:, None]).float()
    first_bad = torch.randint(0, S + 2, (B,), generator=g)  # >= T: a sound solution
    labels = ((torch.arange(S)[None, :] < first_bad[:, None]).float()) * mask
    values = (torch.randint(0, 6, (B, S), generator=g).float() / 5) * mask  # coarse: many ties
    return values, labels, mask


@pytest.mark.parametrize("seed", range(4))
def test_step_auc_matches_loop(seed):
    values, labels, mask = random_case(seed)
    flat = [(values[b, i].item(), labels[b, i].item()) for b in range(len(values)) for i in range(values.shape[1])
            if mask[b, i]]
    assert step_auc(values, labels, mask) == pytest.approx(ref_auc(*zip(*flat)))
    by_index = step_auc_by_index(values, labels, mask)
    for i in range(values.shape[1]):
        col = [(values[b, i].item(), labels[b, i].item()) for b in range(len(values)) if mask[b, i]]
        want = ref_auc(*zip(*col)) if col else math.nan
        assert (math.isnan(want) and math.isnan(by_index[i])) or by_index[i] == pytest.approx(want)


def test_auc_edge_cases():
    assert auc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0
    assert auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == 0.5
    assert math.isnan(auc(torch.tensor([0.5, 0.7]), torch.tensor([1, 1])))


def ref_first_error(values, labels, mask, threshold, discount):
    want, got = [], []
    for b in range(len(values)):
        T = int(mask[b].sum())
        if T == 0:
            continue
        w = next((i for i in range(T) if labels[b, i] == 0), -1)
        g = next((i for i in range(T) if values[b, i] / discount ** (T - 1 - i) < threshold), -1)
        want.append(w)
        got.append(g)
    err = [(w, g) for w, g in zip(want, got) if w >= 0]
    ok = [(w, g) for w, g in zip(want, got) if w < 0]
    acc1 = sum(w == g for w, g in err) / len(err)
    acc2 = sum(g == -1 for _, g in ok) / len(ok)
    return acc1, acc2, 2 * acc1 * acc2 / (acc1 + acc2) if acc1 + acc2 else 0.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("discount", [1.0, 0.8])
def test_first_error_matches_loop(seed, discount):
    values, labels, mask = random_case(seed, B=60)
    m = first_error_metrics(values, labels, mask, threshold=0.5, discount=discount)
    acc1, acc2, f1 = ref_first_error(values, labels, mask, 0.5, discount)
    assert m["first_error_acc"] == pytest.approx(acc1)
    assert m["first_error_correct_acc"] == pytest.approx(acc2)
    assert m["first_error_f1"] == pytest.approx(f1)


def test_first_error_hand_made():
    labels = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]).float()
    mask = torch.ones(3, 4)
    assert first_error_index(labels, mask).tolist() == [2, -1, 0]
    # A TD-PRM with gamma 0.5: a sound prefix 3 steps from the end is worth ~0.125, not an error.
    values = torch.tensor([[0.125, 0.25, 0.05, 0.0], [0.125, 0.25, 0.5, 1.0], [0.01, 0.0, 0.0, 0.0]])
    assert predicted_first_error(values, mask, 0.5, discount=0.5).tolist() == [2, -1, 0]
    assert predicted_first_error(values, mask, 0.5, discount=1.0).tolist() == [0, 0, 0]


def test_step_quality_keys():
    values, labels, mask = random_case(0)
    outcome = labels[:, 0]
    groups = torch.arange(len(values)) // 5
    q = step_quality(values, labels, mask, {"min": values.amax(1)}, outcome, groups)
    assert {"step_auc", "step_auc_by_index", "pairwise/min", "across/min", "first_error_f1"} <= set(q)


# ----- the policy-log-prob verifier and the logprob PRM read-out (real tiny models) -----------------------

def _tiny_records(tok):
    responses = ["12+5=17\n\n17*3=52\n\n52-7=45\n\n\\boxed{45}", "12+5=17\n\n\\boxed{17}",
                 "12+5=17\n\n17*3=51\n\n51-7=44\n\n\\boxed{44}"]
    prompts = [PROMPT, "Start with 3: +4\n", PROMPT]
    return [Trajectory(problem_id=i, prompt=p, answer="44", response=r,
                       prompt_ids=tok.encode(p, add_special_tokens=False),
                       response_ids=tok.encode(r, add_special_tokens=False) + [tok.eos_token_id],
                       steps=split_steps(r), outcome=0.0) for i, (p, r) in enumerate(zip(prompts, responses))]


def test_logprob_verifier_matches_a_loop(tok, tmp_path):
    from tdrm_rl.config import ModelConfig
    from tdrm_rl.models.load import build_tiny_policy
    from tdrm_rl.prm_tools.offline import logprob_verifier_records

    model = build_tiny_policy(tok, ModelConfig(), seed=0).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    records = _tiny_records(tok)
    got = logprob_verifier_records(str(tmp_path), records, "\n\n", micro_batch_size=2)
    for b, r in enumerate(records):
        ids = torch.tensor([r.prompt_ids + r.response_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        tok_logp = [float(logp[j - 1, ids[0, j]]) for j in range(len(r.prompt_ids), ids.shape[1])]
        for k in range(int(got.step_mask[b].sum())):
            end = int(got.step_ends[b, k]) - got.prompt_len  # response offset of the step's last token
            want = math.exp(min(tok_logp[:end + 1]))
            assert float(torch.sigmoid(got.step_logits[b, k])) == pytest.approx(want, rel=1e-4)


def test_logprob_prm_saves_and_loads(tok, tmp_path):
    from tdrm_rl.config import ModelConfig
    from tdrm_rl.models.load import (LogprobValueModel, build_tiny_policy, load_prm, prm_checkpoint_readout,
                                prm_step_logits)

    build_tiny_policy(tok, ModelConfig(), seed=0).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    prm, _ = load_prm(str(tmp_path / "policy"), init_from_policy=True, readout="logprob")
    assert isinstance(prm, LogprobValueModel)
    with torch.no_grad():
        prm.score.weight.normal_(0, 0.5)
        prm.logprob_scale_raw.fill_(0.3)
    prm.save_pretrained(str(tmp_path / "prm"))
    tok.save_pretrained(tmp_path / "prm")
    assert prm_checkpoint_readout(str(tmp_path / "prm")) == "logprob"
    back, _ = load_prm(str(tmp_path / "prm"), init_from_policy=False)
    batch = records_batch(_tiny_records(tok), tok)
    args = (batch.input_ids, batch.attention_mask, batch.step_ends, batch.step_mask, batch.response_mask)
    with torch.no_grad():
        a, b = prm_step_logits(prm.eval(), *args), prm_step_logits(back.eval(), *args)
    assert torch.equal(a, b) and a[batch.step_mask.bool()].std() > 0
    with pytest.raises(ValueError, match="response mask"):
        prm_step_logits(prm, *args[:4])


def test_step_label_table_leaves_out_rows_cut_by_max_steps():
    from tdrm_rl.data.rollout_file import step_label_table

    task = ArithTask(num_ops=3, operand_max=12)
    steps = [split_steps("12+5=17\n\n17*3=52\n\n52-7=45\n\n\\boxed{45}"), split_steps("12+5=17\n\n\\boxed{17}")]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]).float()  # row 1: three step ends for two text steps
    labels, ok = step_label_table(task, [PROMPT, PROMPT], steps, ["44", "44"], mask)
    assert ok.tolist() == [True, False]
    assert labels.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    assert step_label_table(object(), [PROMPT], steps[:1], ["44"], mask[:1]) is None


def test_undiscounted_step_auc():
    # gamma 0.5 TD values of two 3-step solutions: sound ones are 0.25, 0.5, 1 (p = 1); unsound ~0.
    values = torch.tensor([[0.25, 0.5, 1.0], [0.25, 0.3, 0.1]])  # undiscounted: 1, 1, 1 and 1, 0.6, 0.1
    labels = torch.tensor([[1, 1, 1], [1, 0, 0]]).float()
    mask = torch.ones(2, 3)
    q = step_quality(values, labels, mask, {}, torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), discount=0.5)
    assert q["step_auc"] < 1.0  # the raw sound 0.25 ranks below the unsound 0.3
    assert q["step_auc_undiscounted"] == 1.0
