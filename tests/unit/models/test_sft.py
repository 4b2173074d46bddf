"""SFT warm start on a miniature config: it learns, saves an HF checkpoint, and caches by config."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tdrm_rl.config import RunConfig
from tdrm_rl.models.generation import accuracy, generate
from tdrm_rl.models.load import load_policy
from tdrm_rl.models.sft import ensure_policy, run_sft, sft_cache_dir
from tdrm_rl.tasks import get_task


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """run_sft sets torch's thread count for the process; put it back for other test modules."""
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _tiny_cfg(cache_dir: str = ".cache/test") -> RunConfig:
    cfg = RunConfig()
    cfg.data.num_ops, cfg.data.operand_max, cfg.data.eval_size = 1, 5, 24
    cfg.model.cache_dir = cache_dir
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.intermediate_size = 32, 2, 64
    cfg.model.num_heads, cfg.model.num_kv_heads = 2, 1
    cfg.sft.steps, cfg.sft.batch_size, cfg.sft.warmup_steps, cfg.sft.lr = 150, 32, 10, 5e-3
    cfg.sft.torch_threads = 1  # one thread does not collapse when other jobs share the cores
    cfg.rollout.max_new_tokens = 24
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[RunConfig, str, dict]:
    cfg = _tiny_cfg()
    out = str(tmp_path_factory.mktemp("sft"))
    return cfg, out, run_sft(cfg, out, progress=False)


def test_run_sft_outputs(trained) -> None:
    cfg, out, metrics = trained
    for name in ("model.safetensors", "config.json", "tokenizer.json", "sft_metrics.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "sft_metrics.json")) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("eval_greedy_accuracy", "final_loss", "seconds", "steps"):
        assert key in metrics
    assert metrics["steps"] == cfg.sft.steps
    assert 0.0 <= metrics["eval_greedy_accuracy"] <= 1.0
    # It learned: the start-of-training loss is ~ln(vocab) = 4.6 nats per token.
    assert metrics["final_loss"] < 0.8


def test_checkpoint_reproduces_the_reported_accuracy(trained) -> None:
    cfg, out, metrics = trained
    model, tok = load_policy(out)
    task = get_task(cfg.data)
    problems = task.eval_problems(cfg.data.eval_size)
    gen = generate(model, tok, [p.prompt for p in problems], temperature=0.0,
                   max_new_tokens=cfg.rollout.max_new_tokens)
    assert accuracy(task, problems, gen, n=1) == pytest.approx(metrics["eval_greedy_accuracy"])
    # The trained model writes the solution format: steps, then the boxed answer.
    assert sum("\\boxed{" in t for t in gen.response_text) >= len(problems) // 2


def test_cache_dir_tracks_the_relevant_knobs() -> None:
    base = _tiny_cfg("/x/cache")
    path = sft_cache_dir(base)
    assert os.path.dirname(path) == "/x/cache" and os.path.basename(path).startswith("sft-")
    assert sft_cache_dir(_tiny_cfg("/x/cache")) == path
    for section, key, value in (("data", "num_ops", 2), ("data", "operators", "+"), ("model", "hidden_size", 64),
                                ("sft", "lr", 1e-3), ("sft", "steps", 151), ("data", "seed", 1)):
        cfg = _tiny_cfg("/x/cache")
        setattr(getattr(cfg, section), key, value)
        assert sft_cache_dir(cfg) != path, f"{section}.{key}"
    cfg = _tiny_cfg("/x/cache")
    cfg.policy.lr, cfg.trainer.output_dir, cfg.prm.lr = 1.0, "elsewhere", 1.0  # RL knobs: same warm start
    cfg.data.eval_size, cfg.sft.torch_threads = 7, 1  # evaluation / speed only: same weights
    assert sft_cache_dir(cfg) == path


def test_ensure_policy_builds_once_then_reuses(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _tiny_cfg("cache")  # relative, as in the default config
    cfg.sft.steps, cfg.data.eval_size = 5, 4
    path = ensure_policy(cfg, progress=False)
    assert os.path.isabs(path) and path == str(tmp_path / sft_cache_dir(cfg))
    metrics_file = os.path.join(path, "sft_metrics.json")
    stamp = os.stat(metrics_file).st_mtime_ns
    assert os.listdir(tmp_path / "cache") == [os.path.basename(path)]  # no temp dirs left
    assert ensure_policy(cfg, progress=False) == path
    assert os.stat(metrics_file).st_mtime_ns == stamp  # not retrained
    load_policy(path)
    cfg.model.policy_path = str(tmp_path)
    assert ensure_policy(cfg, progress=False) == str(tmp_path)


def test_failed_sft_leaves_no_cache(tmp_path) -> None:
    cfg = _tiny_cfg(str(tmp_path / "cache"))
    cfg.data.num_ops = 0  # the task refuses this, after the temp dir exists
    with pytest.raises(ValueError, match="num_ops"):
        ensure_policy(cfg, progress=False)
    assert os.listdir(tmp_path / "cache") == []
