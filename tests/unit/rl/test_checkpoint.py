"""Checkpoint bookkeeping: only complete folders count, retention, resume resolution, RNG round trip."""

import json
import os
import random

import numpy as np
import pytest
import torch

from tdrm_rl.rl.checkpoint import (COMPLETE, STATE, capture_rng, complete_checkpoints, latest_checkpoint,
                                model_fingerprint, prune, resolve_resume, restore_rng)
from tdrm_rl.rl.tracking import MetricsLogger


def fake_checkpoint(root, name, complete=True):
    path = os.path.join(root, "checkpoints", name)
    os.makedirs(path)
    with open(os.path.join(path, STATE), "w") as f:
        json.dump({"step": 1}, f)
    if complete:
        open(os.path.join(path, COMPLETE), "w").close()
    return path


def test_only_complete_renamed_checkpoints_count(tmp_path):
    out = str(tmp_path)
    assert latest_checkpoint(out) is None and resolve_resume("auto", out) is None
    fake_checkpoint(out, "step_000002")
    fake_checkpoint(out, "step_000010", complete=False)  # crashed before the marker
    fake_checkpoint(out, "step_000012.tmp")  # crashed before the rename
    newest = fake_checkpoint(out, "step_000004")
    assert [s for s, _ in complete_checkpoints(out)] == [2, 4]
    assert latest_checkpoint(out) == resolve_resume("auto", out) == newest
    assert resolve_resume("none", out) is None
    assert resolve_resume(newest, out) == newest
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume(os.path.join(out, "checkpoints", "step_000010"), out)


def test_prune_keeps_the_newest_k_and_clears_temp_folders(tmp_path):
    out = str(tmp_path)
    for step in (1, 2, 3, 4):
        fake_checkpoint(out, f"step_{step:06d}")
    fake_checkpoint(out, "step_000005.tmp")
    prune(out, keep=2)
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["step_000003", "step_000004"]
    prune(out, keep=0)
    assert len(complete_checkpoints(out)) == 2


def test_rng_state_round_trips_through_json():
    state = json.loads(json.dumps(capture_rng()))
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(5)  # move every stream on
    restore_rng(state)
    got = (random.random(), float(np.random.rand()), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_model_fingerprint_changes_with_the_model(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    first = model_fingerprint(str(tmp_path))
    assert model_fingerprint(str(tmp_path)) == first
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)
    assert model_fingerprint(str(tmp_path))["sha256"] != first["sha256"]


def test_metrics_truncate_drops_later_rows_and_a_torn_line(tmp_path):
    logger = MetricsLogger(str(tmp_path), tensorboard=False)
    for step in range(4):
        logger.log(step, {"x": float(step)})
    logger.file.write('{"step": 4, "x"')  # a write cut short by SIGKILL
    logger.file.flush()
    kept = logger.truncate(2)
    assert [r["step"] for r in kept] == [0, 1, 2]
    logger.log(3, {"x": 30.0})
    logger.close()
    rows = [json.loads(line) for line in open(logger.path)]
    assert [(r["step"], r["x"]) for r in rows] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0)]
