"""Two real RL steps of the tiny recipe: real Ray, real DeepSpeed, real transformers, no mocks."""

import json
import math
import os
import random

import torch

from tests.e2e.conftest import tiny_config
from tdrm_rl.rl.trainer import RLTrainer


def weights(group):
    return group.run_rank0("export_state_dict")


def max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_rl_steps_train_both_models_and_sync_weights(ray_local, tmp_path, tiny_cache, tiny_policy):
    cfg = tiny_config(tmp_path, tiny_cache)
    trainer = RLTrainer(cfg, tiny_policy)
    policy_before, prm_before = weights(trainer.policy), weights(trainer.prm)

    summary = trainer.fit()

    # Metrics written: one row per RL step (plus the warm-start evaluation), finite TD loss.
    rows = [json.loads(line) for line in open(os.path.join(cfg.trainer.output_dir, "metrics.jsonl"))]
    steps = [r for r in rows if "prm/td_loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(r["prm/td_loss"]) for r in steps)
    for key in ("timing_s/rollout", "timing_s/update", "policy/rollout_logprob_gap", "prm/ranking_accuracy",
                "throughput/tokens_per_s", "eval/greedy_accuracy"):
        assert key in steps[-1], key
    assert os.listdir(os.path.join(cfg.trainer.output_dir, "tensorboard"))
    assert os.path.getsize(summary["plot"]) > 0

    # Both models changed.
    assert max_diff(policy_before, weights(trainer.policy)) > 0
    assert max_diff(prm_before, weights(trainer.prm)) > 0

    # After the sync, the rollout worker scores a sequence exactly as the trainer does.
    problems = trainer.task.sample_train(4, random.Random(0))
    gen = trainer.generate([p.prompt for p in problems], 2, {})
    batch = trainer.make_batch(gen, problems, 2)
    rollout_lp = trainer.rollout.run_rank0("logprobs", batch)
    trainer_lp = trainer.policy.run_rank0("logprobs", batch)
    assert batch.response_mask.sum() > 0
    assert (rollout_lp - trainer_lp).abs().max().item() < 1e-4

    # The HF checkpoints load back.
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    policy = AutoModelForCausalLM.from_pretrained(os.path.join(summary["checkpoint"], "policy"))
    prm = AutoModelForTokenClassification.from_pretrained(os.path.join(summary["checkpoint"], "prm"))
    saved = weights(trainer.policy)
    assert torch.equal(policy.state_dict()["lm_head.weight"], saved["lm_head.weight"])
    assert prm.config.num_labels == 1
    for group in (trainer.rollout, trainer.policy, trainer.prm):
        group.kill()
