"""TD targets and PRM loss against plain-loop references on random ragged batches."""

import math

import pytest
import torch
import torch.nn.functional as F

from tdrm_rl.config import load_config
from tdrm_rl.algos.td import (
    SHAPINGS,
    ema_update,
    lambda_targets,
    mean_abs_td_error,
    nstep_targets,
    num_steps,
    prm_td_loss,
    terminal_mask,
)

SEEDS = [0, 1, 2, 3, 4]


def random_ragged(seed: int, B: int = 7, S: int = 9, reward_scale: float = 0.3):
    """values in (0,1), rewards that can push targets out of [0,1], lengths 1..S (always incl. 1 and S)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    lengths[0], lengths[1] = 1, S
    step_mask = (torch.arange(S)[None, :] < lengths[:, None]).float()
    values = torch.rand(B, S, generator=g)
    rewards = (torch.rand(B, S, generator=g) - 0.5) * 2 * reward_scale
    outcome = torch.randint(0, 2, (B,), generator=g).float()
    # Garbage in the padding must not matter.
    values = torch.where(step_mask.bool(), values, torch.full_like(values, 7.0))
    rewards = torch.where(step_mask.bool(), rewards, torch.full_like(rewards, -5.0))
    return values, rewards, step_mask, outcome, lengths.tolist()


def ref_nstep(values, rewards, lengths, outcome, n, gamma):
    B, S = values.shape
    out = torch.zeros(B, S, dtype=torch.float64)
    for b in range(B):
        T = lengths[b]
        W = [float(values[b, j]) for j in range(T)]
        W[T - 1] = float(outcome[b])
        for i in range(T):
            m = min(n, T - 1 - i)
            y = sum(gamma**k * float(rewards[b, i + k]) for k in range(m)) + gamma**m * W[i + m]
            out[b, i] = min(max(y, 0.0), 1.0)
    return out


def ref_lambda(values, rewards, lengths, outcome, gamma, lam):
    B, S = values.shape
    out = torch.zeros(B, S, dtype=torch.float64)
    for b in range(B):
        T = lengths[b]
        W = [float(values[b, j]) for j in range(T)]
        W[T - 1] = float(outcome[b])
        G = [0.0] * T
        G[T - 1] = float(outcome[b])
        for i in range(T - 2, -1, -1):
            G[i] = float(rewards[b, i]) + gamma * ((1 - lam) * W[i + 1] + lam * G[i + 1])
        for i in range(T):
            out[b, i] = min(max(G[i], 0.0), 1.0)
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [1, 2, 3, 20])
@pytest.mark.parametrize("gamma", [0.8, 1.0])
def test_nstep_targets_match_loop_reference_on_ragged_batches(seed, n, gamma):
    values, rewards, step_mask, outcome, lengths = random_ragged(seed)
    got = nstep_targets(values, rewards, step_mask, outcome, n=n, gamma=gamma)
    want = ref_nstep(values, rewards, lengths, outcome, n, gamma)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_nstep_targets_with_no_rewards_equal_zero_rewards(seed):
    values, _, step_mask, outcome, lengths = random_ragged(seed)
    got = nstep_targets(values, None, step_mask, outcome, n=2, gamma=0.8)
    want = ref_nstep(values, torch.zeros_like(values), lengths, outcome, 2, 0.8)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)


def test_nstep_targets_hand_computed():
    values = torch.tensor([[0.5, 0.6, 0.9, 0.0]])
    step_mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    outcome = torch.tensor([1.0])
    # n=2: y0 = g^2 * outcome (W_2 is terminal), y1 = g * outcome (truncated), y2 = outcome.
    y = nstep_targets(values, None, step_mask, outcome, n=2, gamma=0.8)
    torch.testing.assert_close(y, torch.tensor([[0.64, 0.8, 1.0, 0.0]]))
    # n=1: y0 = g * V_1 bootstraps from the network.
    y = nstep_targets(values, None, step_mask, outcome, n=1, gamma=0.8)
    torch.testing.assert_close(y, torch.tensor([[0.48, 0.8, 1.0, 0.0]]))
    # wrong answer: the terminal target is 0 whatever the network says there.
    y = nstep_targets(values, None, step_mask, torch.tensor([0.0]), n=1, gamma=0.8)
    torch.testing.assert_close(y, torch.tensor([[0.48, 0.0, 0.0, 0.0]]))


def test_step_penalty_shaping_lowers_each_earlier_target_by_its_discounted_penalties():
    values = torch.tensor([[0.5, 0.6, 0.9, 0.0]])
    step_mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    rewards = SHAPINGS["step_penalty"](step_mask, 0.05)
    # a penalty on leaving each non-terminal step; none after the final step or on padding
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.05, 0.0, 0.0]]))
    y = nstep_targets(values, rewards, step_mask, torch.tensor([1.0]), n=2, gamma=0.8)
    # y0 = r0 + g r1 + g^2 * outcome, y1 = r1 + g * outcome, y2 = outcome
    torch.testing.assert_close(y, torch.tensor([[0.64 - 0.05 - 0.04, 0.8 - 0.05, 1.0, 0.0]]))
    assert torch.equal(SHAPINGS["none"](step_mask, 0.05), torch.zeros_like(step_mask))


def test_every_registered_shaping_is_accepted_by_a_recipe():
    for name in SHAPINGS:
        assert load_config(None, [f"prm.shaping={name}"]).prm.shaping == name


def test_nstep_targets_clamp_to_unit_interval():
    values = torch.tensor([[0.9, 0.9, 0.9]])
    step_mask = torch.ones(1, 3)
    rewards = torch.tensor([[2.0, -3.0, 0.0]])
    y = nstep_targets(values, rewards, step_mask, torch.tensor([1.0]), n=1, gamma=1.0)
    torch.testing.assert_close(y, torch.tensor([[1.0, 0.0, 1.0]]))


def test_nstep_targets_are_detached_and_padding_is_zero():
    values, rewards, step_mask, outcome, _ = random_ragged(0)
    values = values.clone().requires_grad_(True)
    y = nstep_targets(values, rewards, step_mask, outcome, n=2, gamma=0.8)
    assert not y.requires_grad
    assert torch.all(y[step_mask == 0] == 0)
    assert torch.equal(y[terminal_mask(step_mask)], outcome)


def test_nstep_rejects_n_below_one():
    values, _, step_mask, outcome, _ = random_ragged(0)
    with pytest.raises(ValueError, match="n >= 1"):
        nstep_targets(values, None, step_mask, outcome, n=0, gamma=0.8)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.7), (0.8, 0.5), (0.9, 0.0), (1.0, 1.0)])
def test_lambda_targets_match_loop_reference(seed, gamma, lam):
    values, rewards, step_mask, outcome, lengths = random_ragged(seed)
    got = lambda_targets(values, rewards, step_mask, outcome, gamma=gamma, lam=lam)
    want = ref_lambda(values, rewards, lengths, outcome, gamma, lam)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_lambda_zero_is_one_step_td_and_lambda_one_is_monte_carlo(seed):
    values, rewards, step_mask, outcome, _ = random_ragged(seed)
    S = values.shape[1]
    td0 = lambda_targets(values, rewards, step_mask, outcome, gamma=0.9, lam=0.0)
    torch.testing.assert_close(td0, nstep_targets(values, rewards, step_mask, outcome, n=1, gamma=0.9))
    mc = lambda_targets(values, rewards, step_mask, outcome, gamma=0.9, lam=1.0)
    torch.testing.assert_close(mc, nstep_targets(values, rewards, step_mask, outcome, n=S, gamma=0.9))


def test_lambda_targets_hand_computed():
    values = torch.tensor([[0.2, 0.5, 0.3]])
    step_mask = torch.ones(1, 3)
    # G2 = 1; G1 = 0.3*1 + 0.7*1 = 1; G0 = 0.3*V1 + 0.7*G1 = 0.15 + 0.7 = 0.85
    y = lambda_targets(values, None, step_mask, torch.tensor([1.0]), gamma=1.0, lam=0.7)
    torch.testing.assert_close(y, torch.tensor([[0.85, 1.0, 1.0]]))


def ref_loss(logits, targets, lengths, terminal_weight):
    num, den = 0.0, 0.0
    for b, T in enumerate(lengths):
        for i in range(T):
            z, y = float(logits[b, i]), float(targets[b, i])
            p = 1 / (1 + math.exp(-z))
            bce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
            w = terminal_weight if i == T - 1 else 1.0
            num, den = num + w * bce, den + w
    return num / den


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("terminal_weight", [1.0, 2.5, 0.3])
def test_prm_td_loss_matches_weighted_loop_reference(seed, terminal_weight):
    values, rewards, step_mask, outcome, lengths = random_ragged(seed)
    g = torch.Generator().manual_seed(100 + seed)
    logits = torch.randn(values.shape, generator=g, dtype=torch.float64)
    targets = nstep_targets(values, rewards, step_mask, outcome, n=2, gamma=0.8).double()
    got = prm_td_loss(logits, targets, step_mask, terminal_weight=terminal_weight)
    assert got.item() == pytest.approx(ref_loss(logits, targets, lengths, terminal_weight), rel=1e-9)


def test_prm_td_loss_ignores_padding_even_if_non_finite():
    values, rewards, step_mask, outcome, _ = random_ragged(3)
    logits = torch.randn(values.shape)
    logits[step_mask == 0] = float("inf")
    logits.requires_grad_(True)
    targets = nstep_targets(values, rewards, step_mask, outcome, n=2, gamma=0.8)
    targets[step_mask == 0] = float("nan")
    loss = prm_td_loss(logits, targets, step_mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(logits.grad[step_mask == 0] == 0)
    assert torch.all(logits.grad[step_mask != 0] != 0)


def test_prm_td_loss_gradient_is_weighted_sigmoid_minus_target():
    logits = torch.tensor([[0.0, 1.0, 5.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    step_mask = torch.tensor([[1.0, 1.0, 0.0]])
    prm_td_loss(logits, targets, step_mask, terminal_weight=3.0).backward()
    p = torch.sigmoid(logits.detach())
    # weights: step 0 -> 1, step 1 (terminal) -> 3, step 2 padded -> 0; normaliser 4.
    want = torch.tensor([[(p[0, 0] - 1) * 1 / 4, (p[0, 1] - 0) * 3 / 4, 0.0]])
    torch.testing.assert_close(logits.grad, want)


def test_prm_td_loss_zero_terminal_weight_drops_terminal_steps():
    logits = torch.tensor([[0.3, -2.0], [4.0, 0.0]])
    targets = torch.tensor([[0.9, 0.0], [1.0, 0.0]])
    step_mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    got = prm_td_loss(logits, targets, step_mask, terminal_weight=0.0)
    want = F.binary_cross_entropy_with_logits(logits[0, 0], targets[0, 0])
    torch.testing.assert_close(got, want)


def test_num_steps_and_terminal_mask():
    step_mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    assert num_steps(step_mask).tolist() == [3, 1, 0, 4]
    assert num_steps(step_mask).dtype == torch.long
    want = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(terminal_mask(step_mask), want)
    assert torch.equal(terminal_mask(step_mask.bool()), want)


def test_ema_update_moves_target_towards_online():
    target = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])]
    online = [torch.tensor([3.0, 0.0]), torch.tensor([[10.0]], requires_grad=True)]
    ema_update(target, online, decay=0.75)
    torch.testing.assert_close(target[0], torch.tensor([1.5, 1.5]))
    torch.testing.assert_close(target[1], torch.tensor([[2.5]]))
    assert not target[1].requires_grad

    frozen = [torch.tensor([1.0])]
    ema_update(frozen, [torch.tensor([9.0])], decay=1.0)
    assert frozen[0].item() == 1.0
    copied = [torch.tensor([1.0])]
    ema_update(iter(copied), iter([torch.tensor([9.0])]), decay=0.0)
    assert copied[0].item() == 9.0


def test_ema_update_works_on_module_parameters():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    ema_update(target.parameters(), online.parameters(), decay=0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(t.detach(), 0.9 * b + 0.1 * o.detach())


def test_ema_update_rejects_mismatched_parameter_lists():
    with pytest.raises(ValueError, match="1 target tensors but 2 online"):
        ema_update([torch.zeros(1)], [torch.zeros(1), torch.zeros(1)], decay=0.5)
    with pytest.raises(ValueError, match="decay"):
        ema_update([torch.zeros(1)], [torch.zeros(1)], decay=1.5)


@pytest.mark.parametrize("seed", SEEDS)
def test_mean_abs_td_error_matches_loop(seed):
    values, rewards, step_mask, outcome, lengths = random_ragged(seed)
    targets = nstep_targets(values, rewards, step_mask, outcome, n=2, gamma=0.8)
    errs = [abs(float(values[b, i] - targets[b, i])) for b, T in enumerate(lengths) for i in range(T)]
    got = mean_abs_td_error(values, targets, step_mask)
    assert got.item() == pytest.approx(sum(errs) / len(errs), rel=1e-5)
    assert mean_abs_td_error(values, targets, torch.zeros_like(step_mask)).item() == 0.0


def test_prm_worker_targets_follow_the_recipes_shaping():
    from tdrm_rl.data.batch import Batch
    from tdrm_rl.config import PRMConfig
    from tdrm_rl.algos.td import td_targets

    step_mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    ids = torch.zeros(1, 6, dtype=torch.long)
    batch = Batch(input_ids=ids, attention_mask=torch.ones_like(ids), response_mask=torch.ones_like(ids),
                  step_ends=torch.tensor([[1, 3, 5, 0]]), step_mask=step_mask,
                  group_ids=torch.zeros(1, dtype=torch.long), prompt_len=1, outcome=torch.tensor([1.0]))
    logits = torch.logit(torch.tensor([[0.5, 0.6, 0.9, 0.5]]))
    plain = td_targets(PRMConfig(), logits, batch)
    shaped = td_targets(PRMConfig(shaping="step_penalty", shaping_coef=0.05), logits, batch)
    torch.testing.assert_close(plain, torch.tensor([[0.64, 0.8, 1.0, 0.0]]))
    torch.testing.assert_close(shaped, torch.tensor([[0.55, 0.75, 1.0, 0.0]]))
