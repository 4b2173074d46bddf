"""Step-level GAE against a plain per-row loop on ragged steps; spreading step values over tokens."""

import pytest
import torch

from tdrm_rl.algos import step_gae
from tdrm_rl.algos.step_axis import spread_steps_to_tokens, sum_tokens_per_step, token_step_index


def ref_gae(rewards, values, T, gamma, lam):
    """Textbook GAE for one trajectory of T steps; the value after the last step is 0."""
    adv = [0.0] * T
    running = 0.0
    for i in reversed(range(T)):
        next_v = values[i + 1] if i + 1 < T else 0.0
        delta = rewards[i] + gamma * next_v - values[i]
        running = delta + gamma * lam * running
        adv[i] = running
    return adv


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.8, 0.0), (0.9, 1.0)])
def test_step_gae_matches_loop_reference_on_ragged_steps(seed, gamma, lam):
    g = torch.Generator().manual_seed(seed)
    B, S = 7, 5
    T = torch.randint(1, S + 1, (B,), generator=g)
    T[0], T[1] = 1, S  # both extremes
    mask = (torch.arange(S)[None, :] < T[:, None]).float()
    rewards = torch.randn(B, S, generator=g, dtype=torch.float64)
    values = torch.rand(B, S, generator=g, dtype=torch.float64)
    # padding holds junk that must not leak in
    rewards = torch.where(mask > 0, rewards, torch.full_like(rewards, 1e6))
    values = torch.where(mask > 0, values, torch.full_like(values, -1e6))
    adv, returns = step_gae(rewards, values, mask, gamma, lam)
    for b in range(B):
        n = int(T[b])
        expected = ref_gae(rewards[b, :n].tolist(), values[b, :n].tolist(), n, gamma, lam)
        assert adv[b, :n].tolist() == pytest.approx(expected, abs=1e-12)
        assert returns[b, :n].tolist() == pytest.approx([a + v for a, v in zip(expected, values[b, :n].tolist())])
        assert torch.all(adv[b, n:] == 0) and torch.all(returns[b, n:] == 0)


def test_step_gae_lambda_one_is_monte_carlo_return_minus_value():
    rewards = torch.tensor([[0.0, 0.2, 1.0]])
    values = torch.tensor([[0.3, 0.5, 0.9]])
    adv, returns = step_gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([[1.2 - 0.3, 1.2 - 0.5, 1.0 - 0.9]]))
    torch.testing.assert_close(returns, torch.tensor([[1.2, 1.2, 1.0]]))


def test_tokens_map_to_their_step_and_trailing_tokens_to_the_last():
    # response cols 2..7; steps end at 3 and 5; cols 6-7 (e.g. EOS) belong to the last step
    ends, mask = torch.tensor([[3, 5, 0]]), torch.tensor([[1.0, 1.0, 0.0]])
    response = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    idx = token_step_index(ends, mask, 8)
    assert idx[0, 2:].tolist() == [0, 0, 1, 1, 1, 1]
    spread = spread_steps_to_tokens(torch.tensor([[10.0, 20.0, 99.0]]), ends, mask, response)
    assert spread.tolist() == [[0, 0, 10, 10, 20, 20, 20, 20]]
    tokens = torch.arange(8, dtype=torch.float32)[None, :]
    assert sum_tokens_per_step(tokens, ends, mask, response).tolist() == [[2 + 3, 4 + 5 + 6 + 7, 0]]


def test_a_masked_hole_in_the_steps_ends_the_episode_there():
    """Documented in step_gae: the step before a hole is terminal; the steps after it are their own episode."""
    mask = torch.tensor([[1.0, 1, 0, 1, 1]])
    rewards = torch.tensor([[0.0, 1, 7, 0, 2]])  # the 7 sits in the hole and is ignored
    values = torch.tensor([[0.3, 0.6, 9.0, 0.2, 0.4]])
    adv, ret = step_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    before = ref_gae([0.0, 1.0], [0.3, 0.6], 2, 0.9, 0.8)
    after = ref_gae([0.0, 2.0], [0.2, 0.4], 2, 0.9, 0.8)
    torch.testing.assert_close(adv, torch.tensor([[before[0], before[1], 0.0, after[0], after[1]]]))
    torch.testing.assert_close(ret, torch.where(mask.bool(), adv + values, torch.zeros_like(adv)))


def test_discounted_returns_carry_the_discount_across_a_masked_hole():
    """The behaviour `discounted_returns` has (to be stated in its docstring in algos/estimators.py): a masked
    token inside the response counts as a zero-reward step, so a reward after a hole of k tokens reaches the
    tokens before it discounted by gamma**(distance including the k hole tokens); the hole itself reads 0 and
    rewards placed in it are ignored. Today's collate never makes holes, so this is latent."""
    from tdrm_rl.algos.estimators import discounted_returns

    mask = torch.tensor([[1.0, 1, 0, 0, 1]])
    r = torch.tensor([[0.0, 0, 5, 5, 1]])  # the 5s sit in the hole: ignored
    got = discounted_returns(r, mask, gamma=0.5)
    torch.testing.assert_close(got, torch.tensor([[0.5**4, 0.5**3, 0.0, 0.0, 1.0]]))
    # the same response without the hole: one token closer, one factor of gamma less per hole token
    dense = discounted_returns(torch.tensor([[0.0, 0, 1]]), torch.ones(1, 3), gamma=0.5)
    torch.testing.assert_close(dense, torch.tensor([[0.25, 0.5, 1.0]]))
