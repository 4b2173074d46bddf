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
    with RLTrainer(cfg, tiny_policy) as trainer:  # every actor killed, whatever fails
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

        # The checkpoints load back: the policy as an HF causal LM, the PRM (log-prob read-out) with load_prm,
        # scoring as the trained PRM does.
        from transformers import AutoModelForCausalLM

        from tdrm_rl.models.load import load_prm, prm_step_logits

        policy = AutoModelForCausalLM.from_pretrained(os.path.join(summary["checkpoint"], "policy"))
        saved = weights(trainer.policy)
        assert torch.equal(policy.state_dict()["lm_head.weight"], saved["lm_head.weight"])
        prm, _ = load_prm(os.path.join(summary["checkpoint"], "prm"), init_from_policy=False)
        with torch.no_grad():
            logits = prm_step_logits(prm, batch.input_ids, batch.attention_mask, batch.step_ends, batch.step_mask,
                                     batch.response_mask)
        torch.testing.assert_close(logits, trainer.prm.call("values", batch), atol=1e-4, rtol=1e-4)
