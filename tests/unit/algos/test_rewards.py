"""Token rewards: verifiable reward at the last response token, dense PRM rewards at step-end tokens."""

import math

import pytest
import torch

from tdrm_rl.algos import build_token_rewards, process_step_rewards, token_rewards
from tdrm_rl.algos.estimators import group_zscore
from tdrm_rl.algos.rewards import group_zscore_steps
from tdrm_rl.config import PolicyConfig, RewardConfig

from tests.unit.algos.helpers import make_batch

L3, L1 = math.log(3.0), math.log(1 / 3)  # sigmoid -> 0.75, 0.25


def test_process_step_rewards_value_and_value_diff():
    logits = torch.tensor([[0.0, L3, L1], [L3, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0]])
    torch.testing.assert_close(process_step_rewards(logits, mask, "value"), torch.tensor([[0.5, 0.75, 0.25],
                                                                                         [0.75, 0, 0]]))
    torch.testing.assert_close(process_step_rewards(logits, mask, "value_diff"), torch.tensor([[0.0, 0.25, -0.5],
                                                                                              [0.0, 0, 0]]))
    with pytest.raises(ValueError, match="dense reward mode 'nope'"):
        process_step_rewards(logits, mask, "nope")


def test_dense_rewards_sit_on_step_end_tokens_and_outcome_on_the_last_token():
    batch = make_batch(resp_lens=[5, 3], step_ends=[[3, 6], [4]], group_ids=[0, 0], outcome=[1, 0])
    steps = torch.tensor([[0.1, 0.2], [0.3, 0.0]])
    r = token_rewards(batch.outcome, batch.response_mask, steps, batch.step_ends, batch.step_mask)
    # row 0: step ends at cols 3 and 6; col 6 is also the last token, so it holds 0.2 + 1
    torch.testing.assert_close(r[0], torch.tensor([0, 0, 0, 0.1, 0, 0, 1.2, 0]))
    torch.testing.assert_close(r[1], torch.tensor([0, 0, 0, 0, 0.3, 0, 0, 0]))


def test_build_token_rewards_dense_normalises_each_source_before_the_sum():
    batch = make_batch(resp_lens=[5, 3, 4], step_ends=[[3, 6], [4], [3, 5]], group_ids=[0, 0, 0],
                       outcome=[1, 0, 1], step_logits=[[0.0, L3], [L1], [L3, 0.0]])
    rc = RewardConfig(w_rule=0.8, w_prm=0.2, dense="value", normalize=True)
    r = build_token_rewards(batch, rc, PolicyConfig(), torch.zeros(3))
    values = torch.tensor([0.5, 0.75, 0.25, 0.75, 0.5])  # all valid steps of the group
    zv = group_zscore(values, torch.zeros(5, dtype=torch.long))
    zo = group_zscore(torch.tensor([1.0, 0, 1]), torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(r[0, [3, 6]], torch.stack([0.2 * zv[0], 0.2 * zv[1] + 0.8 * zo[0]]))
    torch.testing.assert_close(r[1, 4], 0.2 * zv[2] + 0.8 * zo[1])
    torch.testing.assert_close(r[2, [3, 5]], torch.stack([0.2 * zv[3], 0.2 * zv[4] + 0.8 * zo[2]]))
    assert r[0, [2, 4, 5]].abs().sum() == 0 and r[2, [2, 4]].abs().sum() == 0
    # group_zscore_steps is that same z-score, laid back on [B, S]
    z = group_zscore_steps(process_step_rewards(batch.step_logits, batch.step_mask, "value"), batch.step_mask,
                           batch.group_ids)
    torch.testing.assert_close(z[batch.step_mask != 0], zv)


def test_build_token_rewards_without_dense_puts_the_blended_reward_last_and_folds_kl():
    batch = make_batch(resp_lens=[2], step_ends=[[3]], group_ids=[0], outcome=[1])
    batch.rollout_logprobs = torch.tensor([[0, 0, -1.0, -2.0, 0, 0, 0, 0]])
    batch.ref_logprobs = torch.tensor([[0, 0, -1.5, -1.0, 0, 0, 0, 0]])
    pc = PolicyConfig(kl_coef=0.1, kl_mode="reward", kl_estimator="k1")
    r = build_token_rewards(batch, RewardConfig(), pc, torch.tensor([0.7]))
    torch.testing.assert_close(r[0, 2:4], torch.tensor([-0.1 * 0.5, 0.7 - 0.1 * (-1.0)]))
    assert r[0, :2].abs().sum() == 0 and r[0, 4:].abs().sum() == 0
    r_loss_mode = build_token_rewards(batch, RewardConfig(), PolicyConfig(kl_coef=0.1), torch.tensor([0.7]))
    torch.testing.assert_close(r_loss_mode[0, 2:4], torch.tensor([0.0, 0.7]))
