"""PRM aggregation and reward blending against plain-loop references."""

import math

import pytest
import torch

from tdrm_rl.algos.blend import aggregate_prm, blend_rewards
from tests.unit.algos.test_core import ref_grpo

SEEDS = [0, 1, 2, 3]
MODES = ["before_answer", "min", "mean", "last"]


def random_ragged_logits(seed: int, B: int = 9, S: int = 6):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    lengths[0], lengths[1], lengths[2] = 1, 2, S
    step_mask = (torch.arange(S)[None, :] < lengths[:, None]).float()
    logits = torch.randn(B, S, generator=g, dtype=torch.float64) * 3
    logits = torch.where(step_mask.bool(), logits, torch.full_like(logits, -100.0))  # padding must not win a min
    return logits, step_mask, lengths.tolist()


def ref_aggregate(logits, lengths, mode, use_logit):
    out = []
    for b, T in enumerate(lengths):
        xs = [float(logits[b, i]) for i in range(T)]
        if not use_logit:
            xs = [1 / (1 + math.exp(-x)) for x in xs]
        if mode == "before_answer":
            out.append(xs[T - 2] if T >= 2 else xs[0])
        elif mode == "min":
            out.append(min(xs))
        elif mode == "mean":
            out.append(sum(xs) / T)
        else:
            out.append(xs[T - 1])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use_logit", [True, False])
def test_aggregate_prm_matches_loop_reference(seed, mode, use_logit):
    logits, step_mask, lengths = random_ragged_logits(seed)
    got = aggregate_prm(logits, step_mask, mode, use_logit=use_logit)
    torch.testing.assert_close(got, ref_aggregate(logits, lengths, mode, use_logit))


def test_aggregate_prm_hand_computed():
    logits = torch.tensor([[1.0, -2.0, 3.0, 9.0], [0.5, 9.0, 9.0, 9.0]])
    step_mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(aggregate_prm(logits, step_mask, "before_answer"), torch.tensor([-2.0, 0.5]))
    torch.testing.assert_close(aggregate_prm(logits, step_mask, "min"), torch.tensor([-2.0, 0.5]))
    torch.testing.assert_close(aggregate_prm(logits, step_mask, "mean"), torch.tensor([2.0 / 3, 0.5]))
    torch.testing.assert_close(aggregate_prm(logits, step_mask, "last"), torch.tensor([3.0, 0.5]))
    torch.testing.assert_close(
        aggregate_prm(logits, step_mask, "last", use_logit=False), torch.sigmoid(torch.tensor([3.0, 0.5]))
    )


def test_aggregate_prm_row_without_steps_scores_zero():
    logits = torch.tensor([[5.0, 6.0], [1.0, 2.0]])
    step_mask = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    for mode in MODES:
        assert aggregate_prm(logits, step_mask, mode)[0].item() == 0.0
    assert aggregate_prm(torch.zeros(3, 0), torch.zeros(3, 0), "min").tolist() == [0.0, 0.0, 0.0]


def test_aggregate_prm_unknown_mode_is_named():
    with pytest.raises(ValueError, match=r"'median'.*before_answer"):
        aggregate_prm(torch.zeros(1, 2), torch.ones(1, 2), "median")


def test_blend_rewards_weighted_sum():
    rule = torch.tensor([1.0, 0.0, 1.0])
    prm = torch.tensor([2.0, -1.0, 0.5])
    got = blend_rewards(rule, prm, w_rule=0.8, w_prm=0.2)
    torch.testing.assert_close(got, torch.tensor([1.2, -0.2, 0.9]))


@pytest.mark.parametrize("seed", SEEDS)
def test_blend_rewards_normalizes_each_source_within_groups(seed):
    g = torch.Generator().manual_seed(seed)
    rule = torch.randint(0, 2, (12,), generator=g).double()
    prm = torch.randn(12, generator=g, dtype=torch.float64) * 5 + 3
    group_ids = torch.arange(12) % 3  # interleaved groups
    got = blend_rewards(rule, prm, 0.8, 0.2, group_ids=group_ids, normalize=True)
    want = 0.8 * ref_grpo(rule, group_ids, 1e-6) + 0.2 * ref_grpo(prm, group_ids, 1e-6)  # the group z-score
    torch.testing.assert_close(got, want)
    # without normalisation the large-scale PRM source would dominate; with it the result differs
    assert not torch.allclose(got, blend_rewards(rule, prm, 0.8, 0.2))


def test_blend_rewards_normalize_needs_group_ids():
    with pytest.raises(ValueError, match="group_ids"):
        blend_rewards(torch.zeros(2), torch.zeros(2), 0.8, 0.2, normalize=True)
    with pytest.raises(ValueError, match="shape"):
        blend_rewards(torch.zeros(2), torch.zeros(3), 0.8, 0.2)
