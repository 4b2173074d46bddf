"""DAPO dynamic sampling: constant groups are dropped, the batch is refilled within a round budget."""

import pytest
import torch

from tdrm_rl.algos import DynamicSampler, informative_groups


def test_informative_groups_drops_all_equal_rewards():
    rewards = torch.tensor([[1.0, 1, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]])
    assert informative_groups(rewards).tolist() == [False, True, False, True]


def test_refill_from_extra_rounds_until_full():
    s = DynamicSampler(num_groups=3, max_extra_rounds=2)
    s.add_round(["a", "b", "c"], torch.tensor([[1.0, 1], [0, 1], [0, 0]]))
    assert s.needs_more() and s.missing() == 2
    s.add_round(["d", "e"], torch.tensor([[1.0, 0], [1, 0]]))
    assert not s.needs_more()
    assert s.result() == ["b", "d", "e"]
    assert s.stats() == {"sampling/dropped_groups": 2.0, "sampling/rounds": 2.0, "sampling/padded_groups": 0.0}


def test_round_budget_is_bounded_and_the_batch_is_topped_up_with_dropped_groups():
    s = DynamicSampler(num_groups=4, max_extra_rounds=2)
    rounds = 0
    while s.needs_more():  # every round gives one informative group out of two
        k = s.missing()
        names = [f"r{rounds}g{i}" for i in range(k)]
        rewards = torch.tensor([[0.0, 1.0]] + [[1.0, 1.0]] * (k - 1))
        s.add_round(names, rewards)
        rounds += 1
    assert rounds == 3  # the first round plus at most 2 extra
    kept = ["r0g0", "r1g0", "r2g0"]
    assert s.result() == kept + ["r0g1"]  # one dropped group pads the batch back to 4
    assert s.stats() == {"sampling/dropped_groups": 3.0 + 2.0 + 1.0, "sampling/rounds": 3.0,
                         "sampling/padded_groups": 1.0}


def test_mismatched_round_and_bad_budget_are_errors():
    with pytest.raises(ValueError, match="2 groups but 1 reward rows"):
        DynamicSampler(2, 1).add_round(["a", "b"], torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="max_extra_rounds >= 0"):
        DynamicSampler(2, -1)
