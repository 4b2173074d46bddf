"""One-step-off async rollout: a real 3-step run still trains, and its data is at most one update stale."""

import json
import math
import os

from tests.e2e.conftest import tiny_config
from tdrm_rl.rl.trainer import RLTrainer


def max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_async_rollout_trains_with_staleness_at_most_one(ray_local, tmp_path, tiny_cache, tiny_policy):
    cfg = tiny_config(tmp_path, tiny_cache, "trainer.async_rollout=true", "trainer.total_steps=3",
                      "trainer.eval_every=3", "trainer.eval_sampled=false", "data.eval_size=8")
    trainer = RLTrainer(cfg, tiny_policy)
    policy_before = trainer.policy.run_rank0("export_state_dict")
    prm_before = trainer.prm.run_rank0("export_state_dict")

    trainer.fit()

    rows = [json.loads(line) for line in open(os.path.join(cfg.trainer.output_dir, "metrics.jsonl"))]
    steps = [r for r in rows if "prm/td_loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(math.isfinite(r["prm/td_loss"]) and math.isfinite(r["policy/loss"]) for r in steps)
    # The first rollout is on-policy; every later one was generated before the previous update landed.
    assert [r["rollout/staleness"] for r in steps] == [0, 1, 1]
    # Ratios are taken against the rollout-time logprobs: stale data moves them off 1 by more than the
    # rollout/trainer numerical gap of the fresh first step.
    assert steps[1]["policy/rollout_logprob_gap"] > 10 * steps[0]["policy/rollout_logprob_gap"]
    assert "timing_s/rollout_wait" in steps[0] and "timing_s/rollout_wait" not in steps[-1]
    assert trainer.pending is None  # the last step submits nothing ahead
    assert max_diff(policy_before, trainer.policy.run_rank0("export_state_dict")) > 0
    assert max_diff(prm_before, trainer.prm.run_rank0("export_state_dict")) > 0
    for group in (trainer.rollout, trainer.policy, trainer.prm):
        group.kill()
