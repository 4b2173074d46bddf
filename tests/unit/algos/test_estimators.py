"""Every registered estimator against a hand-computed example (uniform signature: batch, token_rewards, cfg)."""

import math

import pytest
import torch

from tdrm_rl.algos import ADV_ESTIMATORS, get_adv_estimator, token_rewards
from tdrm_rl.algos.estimators import discounted_returns, rloo_advantages
from tdrm_rl.config import AlgorithmConfig

from tests.unit.algos.helpers import make_batch

# rows: 5, 3, 6, 4 response tokens; groups {0, 1, 2} and the singleton {3}; outcomes 1, 0, 0, 1
BATCH = make_batch(resp_lens=[5, 3, 6, 4], step_ends=[[3, 6], [4], [2, 4, 7], [3, 5]], group_ids=[0, 0, 0, 1],
                   outcome=[1, 0, 0, 1])
LENS = [5, 3, 6, 4]


def outcome_rewards(batch):
    return token_rewards(batch.outcome, batch.response_mask)


def run(name, batch=BATCH, **cfg):
    out = get_adv_estimator(name)(batch, outcome_rewards(batch), AlgorithmConfig(**cfg))
    assert out.advantages.shape == batch.response_mask.shape
    assert torch.all(out.advantages[batch.response_mask == 0] == 0)
    return out


def per_row(adv, batch=BATCH):
    """The advantage of each row, checking it is the same on all of the row's response tokens."""
    rows = []
    for b in range(len(batch)):
        vals = adv[b][batch.response_mask[b] != 0]
        assert torch.allclose(vals, vals[0].expand_as(vals)), vals
        rows.append(float(vals[0]))
    return rows


def whiten_by_hand(token_values):
    mean = sum(token_values) / len(token_values)
    std = math.sqrt(sum((v - mean) ** 2 for v in token_values) / len(token_values))
    return [(v - mean) / (std + 1e-8) for v in token_values]


def test_all_issue_estimators_are_registered():
    assert {"grpo", "drgrpo", "ppo", "rloo", "reinforce_pp", "reinforce_pp_baseline"} <= set(ADV_ESTIMATORS)


def test_grpo_hand_computed():
    # group {1, 0, 0}: mean 1/3, population std sqrt(2)/3 -> z = sqrt(2), -1/sqrt(2), -1/sqrt(2); singleton 0
    got = per_row(run("grpo").advantages)
    assert got == pytest.approx([math.sqrt(2), -1 / math.sqrt(2), -1 / math.sqrt(2), 0.0], abs=1e-5)


def test_drgrpo_hand_computed():
    assert per_row(run("drgrpo").advantages) == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0.0], abs=1e-6)


def test_rloo_hand_computed():
    # leave-one-out means: others of row 0 = (0 + 0) / 2, of rows 1 and 2 = (1 + 0) / 2; singleton has none
    assert per_row(run("rloo").advantages) == pytest.approx([1.0, -0.5, -0.5, 0.0], abs=1e-6)
    # = G/(G-1) * (R - mean)
    r, g = torch.tensor([3.0, 1.0, 2.0, 5.0, 7.0]), torch.tensor([4, 4, 4, 9, 9])
    expected = torch.tensor([1.5 * (3 - 2), 1.5 * (1 - 2), 0.0, 2 * (5 - 6), 2 * (7 - 6)])
    torch.testing.assert_close(rloo_advantages(r, g), expected)


def test_reinforce_pp_hand_computed():
    # gamma 1: every token's reward-to-go is its row's outcome; 9 ones and 9 zeros -> whitened to +-1
    got = per_row(run("reinforce_pp", gamma=1.0).advantages)
    assert got == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=1e-6)


def test_reinforce_pp_baseline_hand_computed():
    # group-mean baselines 1/3 (group 0) and 1 (singleton): shifted returns 2/3, -1/3, -1/3, 0 on each token
    shifted = [2 / 3, -1 / 3, -1 / 3, 0.0]
    tokens = [v for v, n in zip(shifted, LENS) for _ in range(n)]
    white = whiten_by_hand(tokens)
    expected, start = [], 0
    for n in LENS:
        expected.append(white[start])
        start += n
    assert per_row(run("reinforce_pp_baseline", gamma=1.0).advantages) == pytest.approx(expected, abs=1e-5)


def test_discounted_returns_hand_computed():
    mask = torch.tensor([[0.0, 1, 1, 1, 0]])
    r = torch.tensor([[9.0, 1, 0, 2, 9]])  # the 9s sit off the response and are ignored
    got = discounted_returns(r, mask, gamma=0.5)
    torch.testing.assert_close(got, torch.tensor([[0.0, 1 + 0.5 * 0 + 0.25 * 2, 0 + 0.5 * 2, 2.0, 0.0]]))


def test_ppo_hand_computed():
    # row 0: steps end at 3 and 6, V = sigmoid(log 3) = 0.75 then 0.5, outcome 1
    # row 1: one step ending at 4, V = 0.5, outcome 0; both in one group
    batch = make_batch(resp_lens=[5, 3], step_ends=[[3, 6], [4]], group_ids=[0, 0], outcome=[1, 0],
                       step_logits=[[math.log(3.0), 0.0], [0.0]])
    out = run("ppo", batch, gamma=1.0, lam=0.5)
    # Bellman backups r_0 + gamma V_0: row 0 -> 0 + 0.75 (has a next step), row 1 -> 0 (its first step is the last).
    # Start values are the leave-one-out backups: row 0 -> 0, row 1 -> 0.75.
    # row 0: delta_1 = 1 - 0.75 = 0.25, delta_0 = 0 + 0.75 - 0 = 0.75, A_0 = 0.75 + 0.5 * 0.25 = 0.875
    # row 1: delta_0 = 0 - 0.75
    torch.testing.assert_close(out.returns, torch.tensor([[0.875, 1.0], [0.0, 0.0]]))
    tokens = [0.875, 0.875, 0.25, 0.25, 0.25, -0.75, -0.75, -0.75]  # cols 2-3 step 0, cols 4-6 step 1; row 1
    white = whiten_by_hand(tokens)
    torch.testing.assert_close(out.advantages[0, 2:7], torch.tensor(white[:5]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.advantages[1, 2:5], torch.tensor(white[5:]), atol=1e-5, rtol=0)


def test_ppo_needs_step_values():
    with pytest.raises(ValueError, match="step_logits"):
        run("ppo")
