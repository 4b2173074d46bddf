import math

import pytest

from tdrm_rl.prm_tools.advantage_study import advantage_composition, sound_prefix_fraction


def _row(pid, outcome, values, labels):
    return {"problem_id": pid, "outcome": outcome, "values": values, "labels": labels}


def test_sound_prefix_fraction_counts_steps_before_the_first_wrong_one():
    assert sound_prefix_fraction([1, 1, 0, 0]) == 0.5
    assert sound_prefix_fraction([0, 0, 0, 0]) == 0.0
    assert sound_prefix_fraction([1, 1, 1]) == 1.0


def test_in_an_all_wrong_group_std_normalisation_makes_the_prm_term_full_size():
    # Three wrong solutions; the PRM's before-answer value rises with the sound prefix (signal).
    wrong = [_row(0, 0.0, [0.9, v, 0.1], labels) for v, labels in
             [(0.2, [1, 0, 0]), (0.5, [1, 1, 0]), (0.8, [1, 1, 0])]]
    study = advantage_composition(wrong, w_rule=0.8, w_prm=0.2)
    logit = [math.log(v / (1 - v)) for v in (0.2, 0.5, 0.8)]
    mean = sum(logit) / 3
    dr = sum(abs(0.2 * (x - mean)) for x in logit) / 3  # Dr. GRPO: the centred PRM term, unscaled
    assert study["drgrpo"]["all_wrong"]["abs_adv"] == pytest.approx(dr, rel=1e-6)
    std = math.sqrt(sum((0.2 * (x - mean)) ** 2 for x in logit) / 3)
    assert study["grpo"]["all_wrong"]["abs_adv"] == pytest.approx(dr / std, rel=1e-4)  # std-normalised: ~0.8
    assert study["grpo"]["all_wrong"]["corr_sound_prefix"] > 0.8
    assert study["grpo"]["groups"] == {"all_wrong": 1}


def test_a_mixed_group_keeps_right_above_wrong_unless_the_prm_disagrees_strongly():
    rows = [_row(1, 1.0, [0.9, 0.1], [1, 1]), _row(1, 0.0, [0.9, 0.99], [1, 0])]
    study = advantage_composition(rows, w_rule=0.8, w_prm=0.2)
    # before_answer reads step 0 (T - 2) for a two-step solution: both 0.9, so only the rule separates them
    assert study["grpo"]["mixed"]["right_above_wrong"] == 1.0
    assert study["drgrpo"]["mixed"]["rule_share"] == pytest.approx(1.0)
