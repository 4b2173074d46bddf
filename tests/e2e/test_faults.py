"""The fault matrix (issue 16 item 6), end to end: a fault lands in a real run, and nothing is lost. The run
either ends with the numbers of a run that never saw the fault (metrics and weights), or stops with a named error
and leaves a checkpoint that resumes to them.

One uninterrupted 4-step run is the reference for every case: the session's reference_run (tests/e2e/conftest.py),
which test_reliability.py's SIGKILL-then-resume test shares; every faulted run here has its config. The faults land where they hurt most: an actor
killed while it runs the stage (Ray's process title names the method), the driver killed while a checkpoint is
half-written, the disk full while one is written, the newest checkpoint damaged. Unit-level cases, no Ray:
tests/unit/rl/test_checkpoint.py (full disk on a real tmpfs, damaged checkpoints) and
tests/unit/rl/test_verify_timeout.py (an answer check that never returns).
"""

import errno
import logging
import os
import signal
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.conftest import RECIPE, REFERENCE, REFERENCE_STEPS, metric_rows, run_args
from tests.e2e.test_reliability import TIMING_PREFIXES, Cli, cmdline, kill_tagged, latest_steps, wait_for
from tdrm_rl.config import load_config
from tdrm_rl.rl import checkpoint
from tdrm_rl.rl.checkpoint import COMPLETE, STATE, CheckpointError, checkpoint_problem
from tdrm_rl.rl.trainer import RLTrainer

STEPS = REFERENCE_STEPS
COMMON = REFERENCE  # a checkpoint after every step, all kept: the faults below land on and between them
# Counts of the faults themselves, not results.
FAULT_COUNTS = ("workers/restarts",)


# ----- helpers -------------------------------------------------------------------------------------
def poll_until(predicate, timeout: float = 600, every: float = 0.01, proc=None) -> None:
    """Fast polling, for moments that last a second or less (a stage, a checkpoint write)."""
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out waiting"
        assert proc is None or proc.poll() is None, "the run ended early"
        time.sleep(every)


def wait_in_task(pid: int, task: str) -> None:
    """Until the actor process runs `task` ("PRMWorker.td_update"): Ray titles a worker process
    ray::CLASS.METHOD while it runs that method, and ray::CLASS while it waits."""
    title = f"ray::{task}".encode()
    poll_until(lambda: cmdline(pid).startswith(title))


def assert_same_run(reference: str, run: str) -> None:
    """Every metrics row and the final weights of `run` equal those of `reference` (wall-clock and fault counts
    aside): the fault lost nothing and changed nothing."""
    a, b = metric_rows(reference), metric_rows(run)
    assert sorted(a) == sorted(b) == list(range(STEPS + 1))
    for step in a:
        keys = {k for k in a[step] if not k.startswith(TIMING_PREFIXES) and k not in FAULT_COUNTS}
        assert keys == {k for k in b[step] if not k.startswith(TIMING_PREFIXES) and k not in FAULT_COUNTS}
        for k in keys:
            if isinstance(a[step][k], float) and isinstance(b[step][k], float):
                assert b[step][k] == pytest.approx(a[step][k], rel=1e-4, abs=1e-6), (step, k)
            else:
                assert b[step][k] == a[step][k], (step, k)
    final = f"checkpoints/step_{STEPS:06d}"
    for role in ("policy", "prm"):
        wa = load_file(os.path.join(reference, final, role, "model.safetensors"))
        wb = load_file(os.path.join(run, final, role, "model.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)


@pytest.fixture
def straight(reference_run) -> str:
    """The reference: the same steps, no fault (trained once per session)."""
    return reference_run


# ----- the matrix ------------------------------------------------------------------------------------
def test_a_full_disk_then_actors_killed_mid_stage_resume_to_the_uninterrupted_numbers(
        straight, tmp_path, tiny_cache, tiny_policy, monkeypatch, caplog):
    """d) The disk fills while step 2's checkpoint is written (ENOSPC from our own write of trainer_state.json,
    after the workers wrote their weights): the run stops with a CheckpointError, step 1's checkpoint intact.
    The resumed run then meets a) the rollout actor killed mid-generate (restart, same weights and RNG, retry) and
    b) the PRM actor killed mid-update (restart, back to the step-2 checkpoint, redo step 3)."""
    args = run_args(tmp_path, "faulted", tiny_cache, tiny_policy, *COMMON)
    out = str(tmp_path / "faulted")
    real_write = checkpoint._fsync_write

    def disk_full_at_step_2(path: str, text: str) -> None:
        if os.path.basename(path) == STATE and "step_000002" in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_write(path, text)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "_fsync_write", disk_full_at_step_2)
        with RLTrainer(load_config(RECIPE, args), tiny_policy) as trainer, pytest.raises(CheckpointError) as stopped:
            trainer.fit()
    first = os.path.join(out, "checkpoints", "step_000001")
    message = str(stopped.value)
    assert message.startswith("checkpoint step_000002 was not written (OSError: [Errno 28] No space left on device")
    assert message.endswith(f"the newest whole checkpoint is {first}: resume from it with trainer.resume=auto once "
                            "that is fixed")
    assert os.listdir(os.path.join(out, "checkpoints")) == ["step_000001"] and checkpoint_problem(first) is None

    with RLTrainer(load_config(RECIPE, args + ["trainer.resume=auto"]), tiny_policy) as trainer:
        rollout_pid, prm_pid = trainer.rollout.run_rank0("pid"), trainer.prm.run_rank0("pid")

        def kill_mid_stage():
            wait_in_task(rollout_pid, "RolloutWorker.generate")  # step 2's rollout
            os.kill(rollout_pid, signal.SIGKILL)
            wait_for(lambda: os.path.exists(os.path.join(out, "checkpoints", "step_000002", COMPLETE)), 600)
            wait_in_task(prm_pid, "PRMWorker.td_update")  # step 3's update
            os.kill(prm_pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_mid_stage, daemon=True)
        killer.start()
        with caplog.at_level(logging.WARNING, logger="tdrm_rl"):
            trainer.fit()
        killer.join(timeout=1)
    deaths = [r.getMessage() for r in caplog.records if "worker died" in r.getMessage()]
    assert len(deaths) == 2, deaths
    assert deaths[0].startswith("rollout: worker died during stage 'generate'"), deaths
    assert deaths[1].startswith("prm: worker died during stage 'prm_td_update'"), deaths
    assert [metric_rows(out)[s]["workers/restarts"] for s in (2, 3)] == [1, 2]
    assert_same_run(straight, out)


def test_sigkill_mid_checkpoint_write_then_a_damaged_newest_checkpoint_resume_to_the_uninterrupted_numbers(
        straight, tmp_path, tiny_cache, tiny_policy):
    """c) SIGKILL of the driver while the last checkpoint is half-written: it never counts. e) Then the newest
    complete one is damaged (its policy weights cut short): resume says so in one line, falls back to the one
    before, and the run ends as if nothing had happened."""
    args = run_args(tmp_path, "killed", tiny_cache, tiny_policy, *COMMON)
    root = tmp_path / "killed" / "checkpoints"
    last = f"step_{STEPS:06d}"
    run = Cli(args)
    try:
        poll_until(lambda: root.is_dir() and any(n.startswith(f".tmp-{last}-") for n in os.listdir(root)),
                   proc=run.proc)
        run.proc.send_signal(signal.SIGKILL)
        run.wait()
    finally:
        kill_tagged(run.tag)  # the driver had no chance to stop its Ray instance
    assert any(n.startswith(f".tmp-{last}-") for n in os.listdir(root)), "the kill came after the rename"
    assert latest_steps(tmp_path / "killed") == list(range(1, STEPS))  # the half-written one is no checkpoint

    newest = root / f"step_{STEPS - 1:06d}"
    weights = newest / "policy" / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    resumed = Cli(args + ["trainer.resume=auto"])
    rc, err = resumed.wait()
    assert rc == 0, err[-3000:]
    skipped = [line for line in err.splitlines() if "damaged checkpoint" in line]
    assert skipped == [f"tdrm_rl: skipping damaged checkpoint {newest.name} (policy/model.safetensors holds "
                       f"{size // 2} bytes, {size} were written) in {root}; using {root}/step_{STEPS - 2:06d}"], err
    assert resumed.leftover() == []
    assert_same_run(straight, str(tmp_path / "killed"))
    assert all(checkpoint_problem(str(root / f"step_{s:06d}")) is None for s in range(1, STEPS + 1))
    assert not [n for n in os.listdir(root) if n.startswith(".tmp-")]  # the half-written folder was cleared
