"""PRM warm-up (tdrm_rl/prm_tools/warmup.py) on a tiny random policy: it writes a PRM checkpoint that loads and
scores, a second call reuses it, a changed setting builds another, disabled (or model.prm_path set) is None."""

import json
import os

import pytest
import torch

from tdrm_rl.config import load_config
from tdrm_rl.prm_tools.warmup import SUMMARY_FILE, ensure_prm, warmup_cache_dir
from tests.unit.conftest import save_tiny_policy

SMALL = ["prm_warmup.enabled=true", "prm_warmup.problems=4", "prm_warmup.samples=2", "prm_warmup.batch_size=4",
         "prm_warmup.val_fraction=0.25", "rollout.max_new_tokens=24", "rollout.micro_batch_size=16",
         "prm.micro_batch_size=8", "trainer.torch_threads=1"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return save_tiny_policy(str(tmp_path_factory.mktemp("warm-policy")))


def local_prm_worker_for(cfg, path):
    from tdrm_rl.prm_tools.offline import local_prm_worker

    return local_prm_worker(cfg, path, init_from_policy=False)


def cfg_for(cache, *extra):
    return load_config(None, [*SMALL, f"model.cache_dir={cache}", *extra])


def test_warmup_builds_a_prm_that_loads_and_scores_and_is_reused(policy, tmp_path, one_thread):
    from tdrm_rl.data.rollout_file import records_batch
    from tdrm_rl.models.load import load_prm, prm_checkpoint_readout, prm_step_logits
    from tdrm_rl.prm_tools.offline import local_rollout_worker, sample_rollouts
    from tdrm_rl.tasks import get_task

    cfg = cfg_for(tmp_path)
    path = ensure_prm(cfg, policy, progress=False)
    assert path == os.path.join(warmup_cache_dir(cfg, policy), "prm") and os.path.isdir(path)
    summary = json.load(open(os.path.join(os.path.dirname(path), SUMMARY_FILE)))
    assert summary["trajectories"] == 3 * 2 and summary["train_problems"] == 3
    assert summary["optimizer_steps"] == 2 and summary["validation"]["problems"] == 1
    assert summary["loss_last"] is not None

    # The warm PRM loads as a saved PRM (the logprob read-out's value head round-trips) and scores steps.
    assert prm_checkpoint_readout(path) == "logprob"
    model, tok = load_prm(path, init_from_policy=False)
    fresh, _ = load_prm(policy, init_from_policy=True, readout="logprob")
    assert not torch.equal(model.score.weight, fresh.score.weight)  # trained, not a fresh head
    records = sample_rollouts(cfg, local_rollout_worker(cfg, policy), get_task(cfg.data).eval_problems(2), 2)
    b = records_batch(records, tok, cfg.data.step_delimiter)
    with torch.no_grad():
        logits = prm_step_logits(model.eval(), b.input_ids, b.attention_mask, b.step_ends, b.step_mask,
                                 b.response_mask)
    assert logits.shape == b.step_mask.shape and torch.isfinite(logits[b.step_mask.bool()]).all()
    # RL's PRMWorker loads it the way RLTrainer does with model.prm_path set (a saved PRM, no fresh head).
    worker = local_prm_worker_for(cfg, path)
    assert torch.allclose(worker.values(b), logits, atol=1e-5)

    # Second call: the same folder, not rebuilt.
    marker = os.stat(os.path.join(os.path.dirname(path), SUMMARY_FILE)).st_mtime_ns
    assert ensure_prm(cfg_for(tmp_path), policy, progress=False) == path
    assert os.stat(os.path.join(os.path.dirname(path), SUMMARY_FILE)).st_mtime_ns == marker

    # Knobs that only change the online schedule or the speed share the cache.
    assert warmup_cache_dir(cfg_for(tmp_path, "prm.update=frozen", "prm.micro_batch_size=4",
                                    "prm.online_lr_scale=0.1"), policy) == \
        warmup_cache_dir(cfg, policy)


@pytest.mark.parametrize("change", ["prm_warmup.samples=3", "prm.gamma=0.9", "trainer.seed=1", "data.num_ops=2",
                                    "prm_warmup.objective=td_lambda", "prm.lr=5e-4"])
def test_a_changed_setting_gives_another_cache_folder(policy, tmp_path, change):
    assert warmup_cache_dir(cfg_for(tmp_path, change), policy) != warmup_cache_dir(cfg_for(tmp_path), policy)


def test_a_changed_setting_rebuilds(policy, tmp_path, one_thread):
    first = ensure_prm(cfg_for(tmp_path), policy, progress=False)
    second = ensure_prm(cfg_for(tmp_path, "prm_warmup.samples=3"), policy, progress=False)
    assert second != first and os.path.isdir(second) and os.path.isdir(first)
    summary = json.load(open(os.path.join(os.path.dirname(second), SUMMARY_FILE)))
    assert summary["trajectories"] == 3 * 3


def test_disabled_or_explicit_prm_is_none(policy, tmp_path):
    assert ensure_prm(cfg_for(tmp_path, "prm_warmup.enabled=false"), policy, progress=False) is None
    assert ensure_prm(cfg_for(tmp_path, f"model.prm_path={policy}"), policy, progress=False) is None
    assert not os.listdir(tmp_path)  # nothing built
    assert load_config(None).prm_warmup.enabled is False  # off unless a recipe asks
