"""PPO-clip with clip-higher and dual-clip; the three loss aggregation modes; micro-batch weights."""

import pytest
import torch

from tdrm_rl.algos import LOSS_AGG_MODES, agg_weight, aggregate_loss, ppo_clip_loss


def surrogate(ratio, adv, **kw):
    """Per-token loss of one token with the given ratio and advantage."""
    new = torch.tensor([[float(torch.log(torch.tensor(ratio)))]], requires_grad=True)
    loss, stats = ppo_clip_loss(new, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1), **kw)
    loss.backward()
    return float(loss.detach()), float(new.grad), stats


@pytest.mark.parametrize("ratio", [0.5, 0.79, 0.81, 1.0, 1.2, 1.27, 1.29, 2.0, 5.0])
def test_clip_higher_bounds_the_effective_ratio_asymmetrically(ratio):
    lo, hi = 0.2, 0.28
    # positive advantage: the objective never credits a ratio above 1 + clip_high
    loss, grad, _ = surrogate(ratio, 1.0, clip_low=lo, clip_high=hi)
    assert loss == pytest.approx(-min(ratio, 1 + hi), rel=1e-6)
    assert (grad == 0) == (ratio > 1 + hi)
    # negative advantage: never credits a ratio below 1 - clip_low
    loss, grad, _ = surrogate(ratio, -1.0, clip_low=lo, clip_high=hi)
    assert loss == pytest.approx(max(ratio, 1 - lo), rel=1e-6)
    assert (grad == 0) == (ratio < 1 - lo)


def test_dual_clip_caps_the_loss_of_negative_advantages():
    loss, grad, stats = surrogate(10.0, -2.0, dual_clip=3.0)
    assert loss == pytest.approx(3.0 * 2.0) and grad == 0 and float(stats["dual_clip_frac"]) == 1.0
    loss, _, stats = surrogate(2.0, -2.0, dual_clip=3.0)  # below the cap: plain PPO
    assert loss == pytest.approx(4.0) and float(stats["dual_clip_frac"]) == 0.0
    loss, _, _ = surrogate(10.0, 2.0, dual_clip=3.0)  # positive advantage: untouched (clipped at 1.2)
    assert loss == pytest.approx(-2.0 * 1.2)
    loss, _, _ = surrogate(10.0, -2.0)  # off by default
    assert loss == pytest.approx(20.0)


PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])  # 3 tokens, 1 token, an empty row


@pytest.mark.parametrize("mode,expected", [
    ("token_mean", (1 + 2 + 3 + 4) / 4),
    ("seq_mean_token_sum", ((1 + 2 + 3) + 4) / 2),
    ("seq_mean_token_mean", ((1 + 2 + 3) / 3 + 4) / 2),
])
def test_each_aggregation_mode_hand_computed(mode, expected):
    assert float(aggregate_loss(PER_TOKEN, MASK, mode)) == pytest.approx(expected)
    # the policy loss aggregates the same way: with ratio 1 the per-token loss is -A
    loss, _ = ppo_clip_loss(torch.zeros(3, 4), torch.zeros(3, 4), -PER_TOKEN, MASK, agg=mode)
    assert float(loss) == pytest.approx(expected)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_agg_weight_makes_micro_batches_add_up_to_the_whole(mode):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.4).float()
    mask[2] = 0
    whole = aggregate_loss(x, mask, mode)
    parts = sum(agg_weight(mask[r], mask, mode) * aggregate_loss(x[r], mask[r], mode)
                for r in (slice(0, 2), slice(2, 5), slice(5, 6)))
    torch.testing.assert_close(parts, whole)


def test_unknown_aggregation_is_named():
    with pytest.raises(ValueError, match="loss aggregation 'nope'"):
        aggregate_loss(PER_TOKEN, MASK, "nope")
