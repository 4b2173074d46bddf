"""PRM quality metrics against plain-loop references."""

import math

import pytest
import torch

from tdrm_rl.algos.prm_metrics import calibration, ranking_accuracy, value_outcome_stats

SEEDS = [0, 1, 2, 3]


def ref_ranking(scores, outcome, group_ids):
    credit, pairs = 0.0, 0
    B = len(scores)
    for j in range(B):
        for k in range(B):
            if group_ids[j] == group_ids[k] and outcome[j] == 1 and outcome[k] == 0:
                pairs += 1
                credit += 1.0 if scores[j] > scores[k] else 0.5 if scores[j] == scores[k] else 0.0
    return credit / pairs if pairs else math.nan


@pytest.mark.parametrize("seed", SEEDS)
def test_ranking_accuracy_matches_pairwise_loop(seed):
    g = torch.Generator().manual_seed(seed)
    B = 20
    scores = torch.randint(0, 4, (B,), generator=g).float()  # coarse scores -> plenty of ties
    outcome = torch.randint(0, 2, (B,), generator=g).float()
    group_ids = torch.randint(0, 4, (B,), generator=g) * 3
    want = ref_ranking(scores.tolist(), outcome.tolist(), group_ids.tolist())
    assert ranking_accuracy(scores, outcome, group_ids) == pytest.approx(want)


def test_ranking_accuracy_hand_computed_and_cross_group_pairs_ignored():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.0, 1.0])
    outcome = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    group_ids = torch.tensor([0, 0, 1, 1, 2, 2])
    # group 0 right (1), group 1 tie (0.5), group 2 wrong (0); cross-group pairs would change this.
    assert ranking_accuracy(scores, outcome, group_ids) == pytest.approx(0.5)
    assert ranking_accuracy(scores[:2], outcome[:2], group_ids[:2]) == 1.0


def test_ranking_accuracy_is_nan_without_mixed_pairs():
    assert math.isnan(ranking_accuracy(torch.tensor([0.2, 0.4]), torch.tensor([1.0, 1.0]), torch.tensor([0, 0])))
    # a correct and an incorrect answer, but in different groups
    assert math.isnan(ranking_accuracy(torch.tensor([0.2, 0.4]), torch.tensor([1.0, 0.0]), torch.tensor([0, 1])))


def ref_calibration(values, labels, bins):
    buckets = [[] for _ in range(bins)]
    for v, y in zip(values, labels):
        buckets[min(int(math.floor(v * bins)), bins - 1)].append((v, y))
    N = len(values)
    ece = sum(len(b) / N * abs(sum(v for v, _ in b) / len(b) - sum(y for _, y in b) / len(b)) for b in buckets if b)
    brier = sum((v - y) ** 2 for v, y in zip(values, labels)) / N
    return ece, brier


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bins", [1, 5, 10])
def test_calibration_matches_binned_loop_reference(seed, bins):
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(50, generator=g, dtype=torch.float64)
    values[:3] = torch.tensor([0.0, 1.0, 0.5])  # edges: 1.0 goes into the last bin
    labels = (torch.rand(50, generator=g) < values).double()
    got = calibration(values, labels, bins=bins)
    ece, brier = ref_calibration(values.tolist(), labels.tolist(), bins)
    assert got["ece"] == pytest.approx(ece, abs=1e-12)
    assert got["brier"] == pytest.approx(brier, abs=1e-12)


def test_calibration_hand_computed():
    values = torch.tensor([0.15, 0.15, 0.85, 0.95])
    labels = torch.tensor([0.0, 1.0, 1.0, 1.0])
    got = calibration(values, labels, bins=10)
    # bin 1: |0.15 - 0.5| * 2/4; bins 8 and 9: |0.85 - 1| / 4 and |0.95 - 1| / 4
    assert got["ece"] == pytest.approx(0.35 * 0.5 + 0.15 / 4 + 0.05 / 4)
    assert got["brier"] == pytest.approx((0.15**2 + 0.85**2 + 0.15**2 + 0.05**2) / 4)
    perfect = calibration(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]))
    assert perfect == {"ece": 0.0, "brier": 0.0}
    assert math.isnan(calibration(torch.zeros(0), torch.zeros(0))["ece"])


@pytest.mark.parametrize("seed", SEEDS)
def test_value_outcome_stats_match_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    B, S = 10, 5
    lengths = torch.randint(0, S + 1, (B,), generator=g)
    lengths[0], lengths[1] = 0, S
    values = torch.rand(B, S, generator=g, dtype=torch.float64)
    outcome = torch.randint(0, 2, (B,), generator=g).float()
    outcome[2], outcome[3] = 1.0, 0.0
    lengths[2], lengths[3] = max(int(lengths[2]), 1), max(int(lengths[3]), 1)
    step_mask = (torch.arange(S)[None, :] < lengths[:, None]).float()

    final = {1: [], 0: []}
    steps = {1: [], 0: []}
    for b in range(B):
        T = int(lengths[b])
        if T == 0:
            continue
        final[int(outcome[b])].append(float(values[b, T - 1]))
        steps[int(outcome[b])].extend(float(values[b, i]) for i in range(T))
    finals = [(float(values[b, lengths[b] - 1]), float(outcome[b])) for b in range(B) if lengths[b] > 0]

    got = value_outcome_stats(values, step_mask, outcome)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert got["final_value_correct"] == pytest.approx(mean(final[1]))
    assert got["final_value_incorrect"] == pytest.approx(mean(final[0]))
    assert got["final_value_gap"] == pytest.approx(mean(final[1]) - mean(final[0]))
    assert got["step_value_correct"] == pytest.approx(mean(steps[1]))
    assert got["step_value_incorrect"] == pytest.approx(mean(steps[0]))
    assert got["final_abs_error"] == pytest.approx(mean([abs(v - y) for v, y in finals]))
    want_auc = ref_ranking([v for v, _ in finals], [y for _, y in finals], [0] * len(finals))
    assert got["final_auc"] == pytest.approx(want_auc)


def test_value_outcome_stats_nan_when_one_side_is_missing():
    values = torch.tensor([[0.2, 0.9], [0.4, 0.7]])
    stats = value_outcome_stats(values, torch.ones(2, 2), torch.tensor([1.0, 1.0]))
    assert stats["final_value_correct"] == pytest.approx(0.8)
    assert math.isnan(stats["final_value_incorrect"]) and math.isnan(stats["final_auc"])
    assert all(isinstance(v, float) for v in stats.values())
