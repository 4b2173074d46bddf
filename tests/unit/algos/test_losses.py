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


def test_k3_is_capped_like_verl_so_one_far_token_is_bounded_in_value_and_gradient():
    """logp_ref - logp near 10: uncapped k3 = e^10 - 11 ~ 2.2e4 from one token; capped at K3_CAP = 10, flat."""
    import math

    from tdrm_rl.algos.losses import K3_CAP, kl_penalty

    ref = torch.zeros(1, 3)
    logp = torch.tensor([[-10.0, -9.5, -1.0]], requires_grad=True)  # two far tokens, one ordinary
    k3 = kl_penalty(logp, ref, "k3")
    assert k3[0, 0].item() == K3_CAP == 10.0 and k3[0, 1].item() == K3_CAP
    assert math.exp(10.0) - 11.0 > 2e4  # what the first token added before the cap
    assert k3[0, 2].item() == pytest.approx(math.exp(1.0) - 2.0)  # below the cap: exact
    aggregate_loss(k3, torch.ones(1, 3)).backward()
    grad = logp.grad[0]
    assert torch.isfinite(grad).all() and grad.abs().max().item() < 1.0
    assert grad[0].item() == 0.0 and grad[1].item() == 0.0  # the cap is flat
    assert grad[2].item() == pytest.approx((1.0 - math.exp(1.0)) / 3)  # d/dlogp of exp(r-logp)-(r-logp)-1, mean


def test_k3_cap_leaves_every_estimate_in_range_for_any_log_ratio():
    from tdrm_rl.algos.losses import K3_CAP, kl_penalty

    d = torch.linspace(-40, 40, 801)[None]
    k3 = kl_penalty(torch.zeros_like(d), d, "k3")  # logp_ref - logp = d
    assert torch.isfinite(k3).all() and (k3 >= 0).all() and (k3 <= K3_CAP).all()
