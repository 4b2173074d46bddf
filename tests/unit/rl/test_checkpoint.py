"""Checkpoint bookkeeping: only complete folders count, retention, resume resolution, RNG round trip; and the
faults of the write and of the files (issue 16 item 6): a full disk mid-write, a damaged newest checkpoint."""

import errno
import json
import logging
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tdrm_rl.rl import checkpoint
from tdrm_rl.rl.checkpoint import (COMPLETE, STATE, CheckpointError, capture_rng, checkpoint_problem,
                                   complete_checkpoints, latest_checkpoint, model_fingerprint, prune, resolve_resume,
                                   restore_rng, write_checkpoint)
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
    logger = MetricsLogger(str(tmp_path))
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


# ----- faults: a full disk mid-write, a damaged newest checkpoint --------------------------------------
def save_weights(folder: str, step: int, numel: int = 1000) -> None:
    """What the workers write into a checkpoint, in their formats: safetensors weights and an engine-state file."""
    os.makedirs(os.path.join(folder, "policy"))
    save_file({"w": torch.full((numel,), float(step))}, os.path.join(folder, "policy", "model.safetensors"))
    os.makedirs(os.path.join(folder, "policy_engine"))
    torch.save({"step": step}, os.path.join(folder, "policy_engine", "engine.pt"))


def write(out: str, step: int, save_models=None) -> str:
    return write_checkpoint(out, step, {"weights_version": step}, save_models or (lambda f: save_weights(f, step)),
                            "trainer: {}\n", keep=0)


def test_complete_records_every_file_size_and_a_whole_checkpoint_has_no_problem(tmp_path):
    path = write(str(tmp_path), 1)
    record = json.loads(open(os.path.join(path, COMPLETE)).read())
    assert record["step"] == 1
    assert set(record["files"]) == {"policy/model.safetensors", "policy_engine/engine.pt", STATE, "config.yaml"}
    assert record["files"]["policy/model.safetensors"] == os.path.getsize(os.path.join(path, "policy",
                                                                                       "model.safetensors"))
    assert checkpoint_problem(path) is None


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_whole_one_in_one_log_line(tmp_path, caplog):
    out = str(tmp_path)
    first, newest = write(out, 1), write(out, 2)
    weights = os.path.join(newest, "policy", "model.safetensors")
    size = os.path.getsize(weights)
    with open(weights, "r+b") as f:  # a copy or a disk cut short
        f.truncate(size // 2)
    with pytest.raises(Exception):
        load_file(weights)  # really unreadable
    assert checkpoint_problem(newest) == f"policy/model.safetensors holds {size // 2} bytes, {size} were written"
    with caplog.at_level(logging.WARNING, logger="tdrm_rl"):
        assert resolve_resume("auto", out) == first
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"skipping damaged checkpoint step_000002 (policy/model.safetensors holds {size // 2} bytes, "
                     f"{size} were written) in {os.path.dirname(newest)}; using {first}"]
    assert latest_checkpoint(out) == first  # the in-run rewind after a dead trainer skips it too
    assert load_file(os.path.join(first, "policy", "model.safetensors"))["w"][0].item() == 1.0


@pytest.mark.parametrize("damage, problem", [
    ("not json", "trainer_state.json is unreadable (JSONDecodeError"),
    ('{"no": "step"}', "trainer_state.json is unreadable (KeyError"),
])
def test_a_bad_trainer_state_falls_back_to_the_previous_whole_checkpoint(tmp_path, damage, problem):
    out = str(tmp_path)
    first, newest = write(out, 1), write(out, 2)
    with open(os.path.join(newest, STATE), "w") as f:
        f.write(damage)
    assert checkpoint_problem(newest).startswith(problem)
    assert resolve_resume("auto", out) == first


def test_a_missing_file_is_damage_and_an_older_marker_without_sizes_still_resumes(tmp_path):
    out = str(tmp_path)
    first, newest = write(out, 1), write(out, 2)
    os.remove(os.path.join(newest, "policy_engine", "engine.pt"))
    assert checkpoint_problem(newest) == "policy_engine/engine.pt is missing"
    with open(os.path.join(first, COMPLETE), "w") as f:
        f.write("step 1\n")  # a checkpoint written before COMPLETE recorded sizes
    assert checkpoint_problem(first) is None and resolve_resume("auto", out) == first


def test_when_every_checkpoint_is_damaged_resume_refuses_to_start_afresh_over_them(tmp_path):
    out = str(tmp_path)
    only = write(out, 1)
    os.remove(os.path.join(only, "policy", "model.safetensors"))
    with pytest.raises(ValueError, match="no whole checkpoint in .*step_000001 \\(policy/model.safetensors is missing"):
        resolve_resume("auto", out)
    with pytest.raises(ValueError, match="is damaged: policy/model.safetensors is missing"):
        resolve_resume(only, out)  # a named one is used as it is or not at all
    assert latest_checkpoint(out) is None


def test_a_full_disk_while_writing_stops_with_a_named_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """ENOSPC from our own write of trainer_state.json, after the weights went in: the write path's last part."""
    out = str(tmp_path)
    first = write(out, 1)
    real_write = checkpoint._fsync_write

    def disk_full(path: str, text: str) -> None:
        if os.path.basename(path) == STATE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_write(path, text)

    monkeypatch.setattr(checkpoint, "_fsync_write", disk_full)
    with pytest.raises(CheckpointError) as stopped:
        write(out, 2)
    message = str(stopped.value)
    assert message.startswith("checkpoint step_000002 was not written (OSError: [Errno 28] No space left on device: ")
    assert message.endswith(f"the newest whole checkpoint is {first}: resume from it with trainer.resume=auto once "
                            "that is fixed")
    assert stopped.value.exit_code == 1  # a RunStopped: the CLI prints the one line
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["step_000001"]  # no temp folder, no step 2
    assert checkpoint_problem(first) is None and resolve_resume("auto", out) == first


def test_a_worker_that_fails_its_save_stops_the_run_naming_its_error(tmp_path):
    from tdrm_rl.workers.group import RoleError

    def failing_save(folder: str) -> None:
        save_weights(folder, 1)
        raise RoleError("prm: stage 'save_prm' failed: OSError(28, 'No space left on device')")

    with pytest.raises(CheckpointError, match=r"^checkpoint step_000001 was not written \(prm: stage 'save_prm' "
                                              r"failed: OSError\(28, 'No space left on device'\)\); no earlier "
                                              r"checkpoint exists$"):
        write(str(tmp_path), 1, failing_save)
    assert os.listdir(os.path.join(tmp_path, "checkpoints")) == []


FULL_DISK_SCRIPT = """
import json, os, sys
from tests.unit.rl.test_checkpoint import save_weights, write
from tdrm_rl.rl.checkpoint import CheckpointError, checkpoint_problem, latest_checkpoint
out = sys.argv[1]
first = write(out, 1, lambda f: save_weights(f, 1, numel=300_000))  # 1.2 MB of weights: fits in 2 MB
try:
    write(out, 2, lambda f: save_weights(f, 2, numel=300_000))  # does not fit beside the first
    error = None
except CheckpointError as e:
    error = str(e)
print(json.dumps({"error": error, "left": sorted(os.listdir(os.path.join(out, "checkpoints"))),
                  "latest": latest_checkpoint(out), "problem": checkpoint_problem(first)}))
"""


def can_mount_a_small_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_a_small_tmpfs(), reason="no user namespace here to mount a size-limited tmpfs in "
                                                           "(the injected ENOSPC above still runs)")
def test_a_real_full_disk_stops_the_write_with_a_named_error_and_keeps_the_previous_checkpoint(tmp_path):
    """A 2 MB tmpfs in a user namespace (no root): the filesystem itself says ENOSPC, from inside safetensors."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    out = tmp_path / "run"
    out.mkdir()
    script = (f"mount -t tmpfs -o size=2m tmpfs {out} && cd {root} && "
              f"exec {sys.executable} -c \"$0\" {out}")
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, FULL_DISK_SCRIPT],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=root))
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    first = f"{out}/checkpoints/step_000001"
    assert seen["error"].startswith("checkpoint step_000002 was not written (")
    assert "No space left on device" in seen["error"] and seen["error"].endswith(
        f"the newest whole checkpoint is {first}: resume from it with trainer.resume=auto once that is fixed")
    assert seen["left"] == ["step_000001"] and seen["latest"] == first and seen["problem"] is None
