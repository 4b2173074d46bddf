"""Three real RL steps per estimator / PRM schedule on the tiny recipe (real Ray, DeepSpeed, transformers).

One run per case, all in the session's Ray instance and sharing the session's SFT warm start.
"""

import json
import math
import os

import pytest
import torch

from tests.e2e.conftest import ROOT, TINY
from tdrm_rl.config import load_config
from tdrm_rl.rl.trainer import RLTrainer

# Lean: evaluate only at the start and the end, no sampled eval, no tensorboard.
LEAN = ["trainer.total_steps=3", "trainer.eval_every=3", "trainer.eval_sampled=false", "trainer.loggers=[jsonl]"]

CASES = {
    # estimator, PRM schedule, extra options exercised on the way
    "grpo-online-dynamic": ("grpo_tdrm.yaml", ["algorithm.dynamic_sampling=true", "policy.loss_agg=seq_mean_token_mean"]),
    "ppo-online": ("ppo_tdrm.yaml", ["policy.mini_batches=2", "policy.dual_clip=3.0", "policy.entropy_coef=0.01"]),
    "rloo-frozen-dense": ("grpo_tdrm.yaml", ["algorithm.estimator=rloo", "prm.update=frozen",
                                             "reward.dense=value_diff", "reward.normalize=true"]),
    "reinforce_pp-online_before": ("grpo_tdrm.yaml", ["algorithm.estimator=reinforce_pp", "prm.update=online_before",
                                                      "policy.kl_coef=0.01", "policy.kl_mode=reward",
                                                      "policy.clip_high=0.28"]),
}


def weights(group):
    return group.run_rank0("export_state_dict")


def max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("case", list(CASES))
def test_three_steps_write_metrics_and_train_the_policy(case, ray_local, tmp_path, tiny_cache, tiny_policy):
    recipe, extra = CASES[case]
    cfg = load_config(os.path.join(ROOT, "recipes", recipe),
                      TINY + LEAN + [f"model.cache_dir={tiny_cache}", f"trainer.output_dir={tmp_path}/run", *extra])
    trainer = RLTrainer(cfg, tiny_policy)
    try:
        policy_before, prm_before = weights(trainer.policy), weights(trainer.prm)
        trainer.fit()
        rows = [json.loads(line) for line in open(os.path.join(cfg.trainer.output_dir, "metrics.jsonl"))]
        steps = [r for r in rows if "policy/loss" in r]
        assert [r["step"] for r in steps] == [1, 2, 3]
        for r in steps:
            assert math.isfinite(r["policy/loss"]) and math.isfinite(r["advantage/abs_mean"])
        assert max_diff(policy_before, weights(trainer.policy)) > 0

        prm_changed = max_diff(prm_before, weights(trainer.prm)) > 0
        if cfg.prm.update == "frozen":
            assert not prm_changed and all(r["prm/updated"] == 0.0 for r in steps)
        else:
            assert prm_changed and all(r["prm/updated"] == 1.0 for r in steps)
        if cfg.algorithm.estimator == "ppo":
            assert all(math.isfinite(r["advantage/gae_return_mean"]) for r in steps)
        if cfg.algorithm.dynamic_sampling:
            for r in steps:  # a dropped group forces an extra round; never more than 1 + max_extra_rounds
                assert (r["sampling/rounds"] > 1) == (r["sampling/dropped_groups"] > 0)
                assert r["sampling/rounds"] <= 1 + cfg.algorithm.max_extra_rounds
                assert r["sampling/padded_groups"] <= r["sampling/dropped_groups"]
        if cfg.policy.kl_coef > 0:
            assert all(math.isfinite(r["policy/kl"]) for r in steps)
    finally:
        for group in (trainer.rollout, trainer.policy, trainer.prm):
            group.kill()
