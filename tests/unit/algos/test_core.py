"""Advantage estimators, policy losses and registries against plain-loop references."""

import math

import pytest
import torch

from tdrm_rl.algos.estimators import grpo_estimator
from tdrm_rl.algos import (
    ADV_ESTIMATORS,
    POLICY_LOSSES,
    broadcast_sequence_advantages,
    drgrpo_advantages,
    get_adv_estimator,
    get_policy_loss,
    grpo_advantages,
    kl_penalty,
    masked_mean,
    masked_sum,
    ppo_clip_loss,
    register_adv_estimator,
    register_policy_loss,
)

SEEDS = [0, 1, 2, 3]


def random_groups(seed: int, B: int = 23):
    """Non-contiguous, non-consecutive group ids (incl. a singleton) and binary or real rewards."""
    g = torch.Generator().manual_seed(seed)
    group_ids = torch.tensor([10, 3, 77, 5])[torch.randint(0, 4, (B,), generator=g)]
    group_ids[-1] = 999  # singleton group
    rewards = torch.rand(B, generator=g, dtype=torch.float64)
    if seed % 2:
        rewards = (rewards > 0.5).double()
    return rewards, group_ids


def ref_grpo(rewards, group_ids, eps):
    out = []
    for j in range(len(rewards)):
        members = [float(rewards[k]) for k in range(len(rewards)) if group_ids[k] == group_ids[j]]
        mean = sum(members) / len(members)
        std = math.sqrt(sum((r - mean) ** 2 for r in members) / len(members))
        out.append(0.0 if std == 0 else (float(rewards[j]) - mean) / (std + eps))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("seed", SEEDS)
def test_grpo_advantages_match_loop_reference_with_scattered_groups(seed):
    rewards, group_ids = random_groups(seed)
    got = grpo_advantages(rewards, group_ids, eps=1e-6)
    torch.testing.assert_close(got, ref_grpo(rewards, group_ids, 1e-6))


def test_grpo_advantages_hand_computed_and_population_std():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 0.5])
    group_ids = torch.tensor([0, 0, 1, 1, 2, 2])
    adv = grpo_advantages(rewards, group_ids, eps=0.0)
    # population std of {0, 1} is 0.5 -> advantages +-1 (unbiased std would give +-0.707)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 0.0]))


def test_grpo_constant_group_gives_exact_zero_despite_rounding():
    rewards = torch.full((3,), 0.1)  # 0.1 * 3 / 3 is not exactly 0.1 in float
    adv = grpo_advantages(rewards, torch.zeros(3, dtype=torch.long))
    assert torch.equal(adv, torch.zeros(3))


def test_grpo_is_registered_and_unknown_estimator_names_known_ones():
    assert get_adv_estimator("grpo") is grpo_estimator
    assert ADV_ESTIMATORS["grpo"] is grpo_estimator
    with pytest.raises(ValueError, match=r"'nope'.*grpo"):
        get_adv_estimator("nope")
    assert get_policy_loss("ppo_clip") is ppo_clip_loss
    assert POLICY_LOSSES["ppo_clip"] is ppo_clip_loss
    with pytest.raises(ValueError, match=r"'nope'.*ppo_clip"):
        get_policy_loss("nope")


def test_registering_a_new_estimator_and_rejecting_a_clash():
    @register_adv_estimator("_test_const")
    def const(batch, token_rewards, cfg):
        return torch.ones_like(token_rewards)

    try:
        assert get_adv_estimator("_test_const") is const
        with pytest.raises(ValueError, match="already registered"):
            register_adv_estimator("_test_const")(lambda b, r, c: r)
    finally:
        del ADV_ESTIMATORS["_test_const"]

    @register_policy_loss("_test_loss")
    def loss(*args):
        return torch.tensor(0.0), {}

    try:
        assert get_policy_loss("_test_loss") is loss
    finally:
        del POLICY_LOSSES["_test_loss"]


def random_tokens(seed: int, B: int = 5, L: int = 11):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    starts = torch.randint(0, 3, (B,), generator=g)
    pos = torch.arange(L)[None, :]
    mask = ((pos >= starts[:, None]) & (pos < (starts + lengths).clamp(max=L)[:, None])).double()
    old = -torch.rand(B, L, generator=g, dtype=torch.float64) * 3
    new = old + torch.randn(B, L, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(B, L, generator=g, dtype=torch.float64)
    return new, old, adv, mask


def ref_ppo(new, old, adv, mask, lo, hi):
    losses, clipped, kls, ratios = [], [], [], []
    B, L = new.shape
    for b in range(B):
        for t in range(L):
            if mask[b, t] == 0:
                continue
            r = math.exp(float(new[b, t] - old[b, t]))
            a = float(adv[b, t])
            unclipped, clip = -r * a, -min(max(r, 1 - lo), 1 + hi) * a
            losses.append(max(unclipped, clip))
            clipped.append(1.0 if clip > unclipped else 0.0)
            kls.append(float(old[b, t] - new[b, t]))
            ratios.append(r)
    n = len(losses)
    return sum(losses) / n, sum(clipped) / n, sum(kls) / n, sum(ratios) / n


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("lo,hi", [(0.2, 0.2), (0.2, 0.28), (0.05, 0.1)])
def test_ppo_clip_loss_matches_token_mean_loop_reference(seed, lo, hi):
    new, old, adv, mask = random_tokens(seed)
    loss, stats = ppo_clip_loss(new, old, adv, mask, clip_low=lo, clip_high=hi)
    want_loss, want_clip, want_kl, want_ratio = ref_ppo(new, old, adv, mask, lo, hi)
    assert loss.item() == pytest.approx(want_loss, rel=1e-9)
    assert stats["clip_frac"].item() == pytest.approx(want_clip, rel=1e-9)
    assert stats["approx_kl"].item() == pytest.approx(want_kl, rel=1e-9, abs=1e-12)
    assert stats["ratio_mean"].item() == pytest.approx(want_ratio, rel=1e-9)


def test_ppo_clip_token_mean_weights_every_token_equally():
    # one long and one short response: token-mean, not mean of per-sequence means
    new = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    loss, stats = ppo_clip_loss(new, new, adv, mask, 0.2, 0.2)
    assert loss.item() == pytest.approx(-(1 + 1 + 1 + 4) / 4)
    assert stats["clip_frac"].item() == 0.0
    assert stats["ratio_mean"].item() == pytest.approx(1.0)


def test_ppo_clip_gradient_vanishes_on_clipped_tokens():
    old = torch.zeros(1, 4)
    # ratios e^0.5 (A>0 clipped high), e^-0.5 (A<0 clipped low), e^0.5 (A<0 not clipped), 1
    new = torch.tensor([[0.5, -0.5, 0.5, 0.0]], requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, -1.0, 2.0]])
    loss, stats = ppo_clip_loss(new, old, adv, torch.ones(1, 4), 0.2, 0.2)
    loss.backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] == 0
    assert new.grad[0, 2].item() == pytest.approx(math.exp(0.5) / 4)
    assert new.grad[0, 3].item() == pytest.approx(-2.0 / 4)
    assert stats["clip_frac"].item() == pytest.approx(0.5)
    assert not stats["clip_frac"].requires_grad


def test_ppo_clip_ignores_non_finite_padding():
    new, old, adv, mask = random_tokens(0)
    new = new.clone()
    new[mask == 0] = float("nan")
    loss, stats = ppo_clip_loss(new, old, adv, mask, 0.2, 0.2)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in stats.values())


@pytest.mark.parametrize("seed", SEEDS)
def test_kl_penalty_estimators_match_formulas_elementwise(seed):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(3, 6, generator=g, dtype=torch.float64) * 4
    ref = -torch.rand(3, 6, generator=g, dtype=torch.float64) * 4
    k1, k2, k3 = (kl_penalty(logp, ref, e) for e in ("k1", "k2", "k3"))
    for b in range(3):
        for t in range(6):
            d = float(logp[b, t] - ref[b, t])
            assert k1[b, t].item() == pytest.approx(d)
            assert k2[b, t].item() == pytest.approx(0.5 * d * d)
            assert k3[b, t].item() == pytest.approx(min(math.exp(-d) + d - 1, 10.0))  # capped as verl does
    assert torch.all(k3 >= 0)
    assert torch.equal(kl_penalty(ref, ref, "k3"), torch.zeros_like(ref))


def test_kl_penalty_unknown_estimator_is_named():
    with pytest.raises(ValueError, match=r"'k9'.*k1, k2, k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k9")


def test_masked_sum_and_mean():
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    assert masked_sum(x, mask).item() == 14.0
    assert masked_mean(x, mask).item() == 3.5
    torch.testing.assert_close(masked_sum(x, mask, dim=1), torch.tensor([3.0, 11.0]))
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 5.5]))
    torch.testing.assert_close(masked_mean(x, mask.bool(), dim=0), torch.tensor([1.0, 3.5, 6.0]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_broadcast_sequence_advantages_puts_adv_on_response_tokens_only():
    adv = torch.tensor([2.0, -1.0])
    response_mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    got = broadcast_sequence_advantages(adv, response_mask)
    torch.testing.assert_close(got, torch.tensor([[0.0, 2.0, 2.0, 0.0], [0.0, 0.0, -1.0, -1.0]]))


def test_drgrpo_centres_within_groups_without_std_scaling():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.82, 0.8, 0.8])
    groups = torch.tensor([3, 3, 3, 7, 7, 7])
    adv = drgrpo_advantages(rewards, groups)
    expected = torch.tensor([1 / 3, -2 / 3, 1 / 3, 0.04 / 3, -0.02 / 3, -0.02 / 3])
    assert torch.allclose(adv, expected, atol=1e-6)
    # GRPO would blow the 0.02 spread of the second group up to unit scale; Dr. GRPO keeps it small.
    assert grpo_advantages(rewards, groups)[3] > 1.0
