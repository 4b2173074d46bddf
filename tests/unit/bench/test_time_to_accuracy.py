import math

import pytest

from bench.time_to_accuracy import (RATIO_TARGET, TARGET_NAME, ArmRun, EvalPoint, first_reach, ratio_verdict,
                                    reached, summarize)


def curve(*accs: float, every: int = 5, step_s: float = 3.0, per_step: int = 16) -> list[EvalPoint]:
    """Warm point at step 0, then one evaluation every `every` steps."""
    return [EvalPoint(i * every, i * every * step_s, i * every * per_step, a) for i, a in enumerate(accs)]


def test_first_reach_is_the_first_evaluation_at_or_above_the_target() -> None:
    hit = first_reach(curve(0.40, 0.42, 0.45, 0.47), target=0.44)
    assert hit == EvalPoint(10, 30.0, 160, 0.45)


def test_first_reach_ignores_a_later_dip_and_reads_in_step_order() -> None:
    points = curve(0.40, 0.46, 0.41, 0.48)
    assert first_reach(list(reversed(points)), target=0.44).step == 5


def test_first_reach_is_none_when_the_target_is_never_reached() -> None:
    assert first_reach(curve(0.40, 0.42, 0.43), target=0.44) is None


def test_an_exact_hit_counts_despite_float_sums() -> None:
    target = 105 / 200 + 0.04  # 0.5650000000000001: warm 105/200, then 8 more problems solved
    assert target > 113 / 200
    assert reached(113 / 200, target)
    assert not reached(112 / 200, target)


def test_ratio_is_median_tdrm_over_median_trl_and_met_at_half() -> None:
    v = ratio_verdict([40.0, 60.0], [100.0, 120.0], [100.0, 120.0])
    assert v["ratio"] == pytest.approx(50.0 / 110.0)
    assert v["met"] is True and v["target"] == TARGET_NAME
    assert v["measured"] == "0.45x (moonshot 0.3x missed)"
    slow = ratio_verdict([60.0, 60.0], [100.0, 100.0], [100.0, 100.0])
    assert slow["ratio"] == pytest.approx(0.6) and slow["met"] is False


def test_moonshot_is_reported_when_met() -> None:
    assert ratio_verdict([30.0], [100.0], [100.0])["measured"] == "0.30x (moonshot 0.3x met)"


def test_tdrm_not_reaching_the_target_is_a_measured_miss() -> None:
    v = ratio_verdict([40.0, None], [100.0, 100.0], [100.0, 100.0])
    assert v["met"] is False and v["ratio"] is None
    assert v["measured"] == "not reached by tdrm-rl GRPO+TDRM within the cap"


def test_trl_not_reaching_gives_an_upper_bound_that_decides_only_when_low_enough() -> None:
    # TRL's second seed stopped at the cap after 150 s: its time to target is > 150 s, so ratio < 40 / 125.
    v = ratio_verdict([40.0, 40.0], [100.0, None], [100.0, 150.0])
    assert v["ratio"] is None and v["ratio_upper_bound"] == pytest.approx(40.0 / 125.0)
    assert v["met"] is True
    assert v["measured"] == "not reached by TRL GRPOTrainer within the cap; ratio <= 0.32x"
    undecided = ratio_verdict([90.0], [None], [150.0])
    assert undecided["ratio_upper_bound"] == pytest.approx(0.6)
    assert undecided["ratio_upper_bound"] > RATIO_TARGET and undecided["met"] is False


def test_summarize_reports_time_prompts_and_steps_to_target_and_where_it_stopped() -> None:
    run = ArmRun("tdrm", 1, curve(0.40, 0.42, 0.45), eval_s=7.5, setup_s=20.0)
    row = summarize(run, target=0.44, prompts_per_step=16)
    assert row["reached"] is True
    assert (row["wall_s_to_target"], row["prompts_to_target"], row["steps_to_target"]) == (30.0, 160, 10)
    assert (row["final_step"], row["final_accuracy"], row["step_s"]) == (10, 0.45, 3.0)
    assert (row["evals"], row["eval_s"], row["setup_s"]) == (2, 7.5, 20.0)


def test_summarize_of_a_run_that_hit_the_cap() -> None:
    row = summarize(ArmRun("trl", 0, curve(0.40, 0.41, 0.43)), target=0.44, prompts_per_step=16)
    assert row["reached"] is False
    assert row["wall_s_to_target"] is None and row["prompts_to_target"] is None
    assert (row["final_step"], row["final_accuracy"], row["final_wall_s"]) == (10, 0.43, 30.0)
    warm_only = summarize(ArmRun("trl", 0, curve(0.40)), target=0.44, prompts_per_step=16)
    assert math.isnan(warm_only["step_s"])
