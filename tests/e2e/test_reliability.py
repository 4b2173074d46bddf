"""Failures and resume, end to end: the real CLI in its own process (its own Ray instance), killed, signalled,
fed bad input; a rollout actor killed mid-run; a worker that sleeps past its timeout.

Every CLI run carries a unique environment tag; Ray's processes (raylet, workers) inherit it, so "no worker
process is left" is checked by scanning /proc for the tag after the run exits.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import ray
import torch
from safetensors.torch import load_file

from tests.e2e.conftest import RECIPE, REFERENCE, REFERENCE_STEPS, ROOT, metric_rows, run_args, tiny_config
from tdrm_rl.rl.checkpoint import COMPLETE, complete_checkpoints, read_state
from tdrm_rl.rl.trainer import RLTrainer
from tdrm_rl.workers.base import BaseWorker
from tdrm_rl.workers.group import RoleError, WorkerGroup

# Metrics that are wall-clock measurements, not results.
TIMING_PREFIXES = ("timing_s/", "throughput/")


# ----- helpers -------------------------------------------------------------------------------------
def tagged_pids(tag: str) -> list[int]:
    needle = f"TDRM_TEST_TAG={tag}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def kill_tagged(tag: str) -> None:
    for pid in tagged_pids(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Cli:
    """`tdrm-rl train` in a subprocess of its own, tagged."""

    def __init__(self, args: list[str]) -> None:
        self.tag = uuid.uuid4().hex
        env = dict(os.environ, TDRM_TEST_TAG=self.tag,
                   PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "tdrm_rl.cli.main", "train", RECIPE, *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def wait(self, timeout: float = 600) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        return self.proc.returncode, err

    def leftover(self, grace_s: float = 30.0) -> list[int]:
        """Tagged processes still alive `grace_s` after the run ended (Ray's shutdown is asynchronous)."""
        deadline = time.time() + grace_s
        while tagged_pids(self.tag) and time.time() < deadline:
            time.sleep(0.5)
        left = tagged_pids(self.tag)
        kill_tagged(self.tag)
        return left


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out waiting"
        assert proc is None or proc.poll() is None, "the run ended early"
        time.sleep(0.2)


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


# ----- resume ----------------------------------------------------------------------------------------
def test_sigkill_then_resume_at_an_epoch_boundary_matches_an_uninterrupted_run(tmp_path, tiny_cache, tiny_policy,
                                                                               reference_run):
    """4 steps straight (the session's reference_run) vs 2 steps, SIGKILL, resume to 4. The train set holds 8
    problems and a step takes 4, so the kill lands exactly on an epoch boundary: the resumed run must train steps 3-4
    on epoch 1. It checkpoints every 2 steps and keeps 2 (the reference: every step, all kept), so retention and a
    checkpoint cadence that changes no number are checked on the way."""
    assert REFERENCE_STEPS == 4 and "data.train_size=8" in REFERENCE
    cadence = ("trainer.save_every=", "trainer.keep_checkpoints=")
    common = [o for o in REFERENCE if not o.startswith(cadence)] + ["trainer.save_every=2", "trainer.keep_checkpoints=2"]
    killed = Cli(run_args(tmp_path, "killed", tiny_cache, tiny_policy, *common))
    ckpt2 = tmp_path / "killed" / "checkpoints" / "step_000002"
    try:
        wait_for(lambda: (ckpt2 / COMPLETE).exists(), 600, killed.proc)
        killed.proc.send_signal(signal.SIGKILL)
        killed.wait()
        kill_tagged(killed.tag)  # the driver had no chance to stop its Ray instance
        assert 2 in latest_steps(tmp_path / "killed")
        resumed = Cli(run_args(tmp_path, "killed", tiny_cache, tiny_policy, *common, "trainer.resume=auto"))
        rc, err = resumed.wait()
        assert rc == 0, err[-3000:]
        assert resumed.leftover() == []
    finally:
        kill_tagged(killed.tag)

    a, b = metric_rows(reference_run), metric_rows(str(tmp_path / "killed"))
    assert sorted(a) == sorted(b) == [0, 1, 2, 3, 4]
    assert [b[s]["data/epoch"] for s in (1, 2, 3, 4)] == [0, 0, 1, 1]
    for step in (1, 2, 3, 4):
        keys = {k for k in a[step] if not k.startswith(TIMING_PREFIXES)}
        assert keys == {k for k in b[step] if not k.startswith(TIMING_PREFIXES)}
        for k in keys:
            va, vb = a[step][k], b[step][k]
            if isinstance(va, float) and isinstance(vb, float):
                assert vb == pytest.approx(va, rel=1e-4, abs=1e-6), (step, k)
            else:
                assert va == vb, (step, k)
    for role in ("policy", "prm"):
        wa = load_file(os.path.join(reference_run, "checkpoints/step_000004", role, "model.safetensors"))
        wb = load_file(str(tmp_path / "killed/checkpoints/step_000004" / role / "model.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)
    # Retention: only the newest 2 complete checkpoints stay; the final state records the resumed step count.
    assert latest_steps(tmp_path / "killed") == [2, 4]
    assert read_state(str(tmp_path / "killed/checkpoints/step_000004"))["sampler"]["epoch"] == 1


def latest_steps(run_dir) -> list[int]:
    return [s for s, _ in complete_checkpoints(str(run_dir))]


# ----- signals -----------------------------------------------------------------------------------------
def test_sigterm_writes_a_complete_final_checkpoint_and_leaves_no_worker(tmp_path, tiny_cache, tiny_policy):
    run = Cli(run_args(tmp_path, "term", tiny_cache, tiny_policy, "trainer.total_steps=50", "trainer.eval_every=100"))
    metrics = tmp_path / "term" / "metrics.jsonl"
    try:
        wait_for(lambda: metrics.exists() and '"step": 1' in metrics.read_text(), 600, run.proc)
        # The tag reaches Ray's worker processes, so the leftover check below can see them.
        assert any(b"ray::" in cmdline(pid) for pid in tagged_pids(run.tag))
        run.proc.send_signal(signal.SIGTERM)
        rc, err = run.wait(timeout=300)
    finally:
        kill_tagged(run.tag)
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by SIGTERM after step" in last_line(err) and "trainer.resume=auto" in last_line(err)
    steps = latest_steps(tmp_path / "term")
    assert steps and 1 <= steps[-1] < 50
    ckpt = tmp_path / "term" / "checkpoints" / f"step_{steps[-1]:06d}"
    assert read_state(str(ckpt))["step"] == steps[-1]
    assert (ckpt / "policy" / "model.safetensors").exists() and (ckpt / "prm_engine").is_dir()
    assert max(metric_rows(str(tmp_path / "term"))) == steps[-1]
    assert run.leftover() == []


# ----- NaN guard -----------------------------------------------------------------------------------------
def test_nonfinite_updates_are_skipped_counted_then_stop_keeping_the_last_good_checkpoint(tmp_path, tiny_cache,
                                                                                           tiny_policy):
    """An absurd PRM learning rate blows the PRM up after one update; from then on its values are NaN."""
    run = Cli(run_args(tmp_path, "nan", tiny_cache, tiny_policy, "prm.lr=1e30", "trainer.total_steps=6",
                       "trainer.save_every=1", "trainer.max_nonfinite_updates=2", "trainer.eval_every=100"))
    rc, err = run.wait()
    assert rc == 1, err[-3000:]
    line = last_line(err)
    assert "2 updates in a row had a non-finite loss or gradient" in line, err[-3000:]
    rows = metric_rows(str(tmp_path / "nan"))
    stop = max(rows)
    assert stop < 6
    assert rows[stop]["trainer/nonfinite_skips"] >= 2 and rows[stop]["prm/skipped_updates"] >= 1
    steps = latest_steps(tmp_path / "nan")
    assert steps and steps[-1] < stop - 1  # no checkpoint holds a skipped step
    assert f"last good checkpoint: {tmp_path}/nan/checkpoints/step_{steps[-1]:06d}" in line
    assert run.leftover() == []


# ----- bad input through the CLI ----------------------------------------------------------------------
def jsonl_file(tmp_path, lines, name):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


GOOD_ROWS = [json.dumps({"prompt": f"Start with {i}: +1\n", "answer": str(i + 1)}) for i in range(1, 12)]


@pytest.mark.parametrize("case", ["mistyped_key", "missing_model", "missing_data", "bad_row", "no_delimiter"])
def test_bad_input_is_one_clear_line_and_leaves_no_worker(case, tmp_path, tiny_cache, tiny_policy):
    extra, expected = {
        "mistyped_key": (["trainer.totl_steps=2"], "trainer.totl_steps"),
        "missing_model": (["model.policy_path=/nonexistent/model"],
                          "key 'model.policy_path' names a missing path: /nonexistent/model"),
        "missing_data": (["data.task=jsonl", f"data.path={tmp_path}/nope.jsonl"],
                         f"key 'data.path' names a missing file: {tmp_path}/nope.jsonl"),
        "bad_row": (["data.task=jsonl", "data.path=" + jsonl_file(tmp_path, GOOD_ROWS[:3] + ["{oops"] + GOOD_ROWS, "rows.jsonl")],
                    "rows.jsonl line 4: not valid JSON"),
        "no_delimiter": (["data.task=jsonl", "data.path=" + jsonl_file(tmp_path, GOOD_ROWS, "good.jsonl"),
                          "data.step_delimiter=§"],
                         "key 'data.step_delimiter' = '§' does not fit the tokenizer"),
    }[case]
    args = run_args(tmp_path, case, tiny_cache, tiny_policy, *extra)
    if case == "missing_model":
        args = [a for a in args if not a.startswith("model.policy_path=")] + extra
    run = Cli(args)
    rc, err = run.wait(timeout=300)
    assert rc == 2, err[-3000:]
    assert len(err.strip().splitlines()) == 1 and expected in err, err[-3000:]
    assert run.leftover() == []


def test_degenerate_responses_train_and_are_counted(ray_local, tmp_path, tiny_cache, tiny_policy):
    """Responses cut at 2 tokens have no step delimiter and no answer: scored 0, counted, the step completes."""
    cfg = tiny_config(tmp_path, tiny_cache, "rollout.max_new_tokens=2", "trainer.total_steps=1",
                      "trainer.eval_every=100", "data.eval_size=4", "trainer.torch_threads=1")
    trainer = RLTrainer(cfg, tiny_policy)
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    row = metric_rows(cfg.trainer.output_dir)[1]
    assert row["response/no_answer_frac"] == 1.0 and row["response/no_delimiter_frac"] == 1.0
    assert row["reward/rule_mean"] == 0.0
    assert row["prm/td_loss"] is not None and row["policy/skipped_updates"] == 0


# ----- faults in a running trainer -------------------------------------------------------------------------
def test_killed_actors_are_restarted_and_the_run_completes(ray_local, tmp_path, tiny_cache, tiny_policy):
    """The rollout actor dies in step 2 (restart, reload weights, retry the step); the policy actor dies in step 3
    (restart, the run goes back to the step-2 checkpoint and redoes step 3). All steps complete."""
    cfg = tiny_config(tmp_path, tiny_cache, "trainer.total_steps=3", "trainer.save_every=1", "trainer.eval_every=100",
                      "data.eval_size=4", "trainer.torch_threads=1", "trainer.loggers=[jsonl]")
    trainer = RLTrainer(cfg, tiny_policy)
    rollout_pid, policy_pid = trainer.rollout.run_rank0("pid"), trainer.policy.run_rank0("pid")
    out = cfg.trainer.output_dir

    def kill_mid_run():
        wait_for(lambda: os.path.exists(os.path.join(out, "checkpoints", "step_000001", COMPLETE)), 600)
        os.kill(rollout_pid, signal.SIGKILL)  # as the OOM killer would
        wait_for(lambda: os.path.exists(os.path.join(out, "checkpoints", "step_000002", COMPLETE)), 600)
        os.kill(policy_pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_mid_run, daemon=True)
    killer.start()
    try:
        trainer.fit()
        killer.join(timeout=1)
        rows = metric_rows(out)
        assert sorted(rows) == [0, 1, 2, 3]
        assert [rows[s]["workers/restarts"] for s in (1, 2, 3)] == [0, 1, 2]
        assert trainer.rollout.run_rank0("pid") != rollout_pid and trainer.policy.run_rank0("pid") != policy_pid
        # The restarted rollout worker generates with the trainer's weights again.
        problems = trainer.task.eval_problems(2)
        batch = trainer.make_batch(trainer.generate([p.prompt for p in problems], 2, {}), problems, 2)
        gap = (trainer.rollout.run_rank0("logprobs", batch) - trainer.policy.run_rank0("logprobs", batch)).abs()
        assert batch.response_mask.sum() > 0 and gap.max().item() < 1e-4
    finally:
        trainer.shutdown()


class SleepyWorker(BaseWorker):
    """A worker whose one stage hangs: the shape of a stuck collective or a wedged device."""

    role = "sleepy"

    def setup(self) -> None:
        pass

    def nap(self, seconds: float) -> str:
        time.sleep(seconds)
        return "awake"


def test_a_worker_that_sleeps_past_its_timeout_names_role_and_stage(ray_local, tmp_path, tiny_cache):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ship the test worker class by value
    cfg = tiny_config(tmp_path, tiny_cache, "cluster.call_timeout_s=2")
    cfg.cluster.call_timeout_s = 600.0  # a loaded machine may take longer than 2 s just to start the actor
    group = WorkerGroup(SleepyWorker, "sleepy", cfg, num_cpus=0)
    group.timeout = 2.0  # what cluster.call_timeout_s=2 sets
    try:
        assert group.run("nap", 0.0) == ["awake"]
        with pytest.raises(RoleError) as err:
            group.run("nap", 120.0, stage="nap")
        assert str(err.value) == "sleepy: stage 'nap' did not finish within 2 s (cluster.call_timeout_s)"
    finally:
        group.kill()


class RankOneFails(BaseWorker):
    """Rank 1 of a data-parallel group fails where rank 0 succeeds: its answer must not be lost behind rank 0's."""

    role = "flaky"

    def setup(self) -> None:
        pass

    def values(self) -> int:
        if self.rank == 1:
            raise ValueError("rank 1 ran out of memory")
        return self.rank


def test_a_failure_on_rank_one_stops_the_call_naming_role_rank_and_stage(ray_local, tmp_path, tiny_cache):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    group = WorkerGroup(RankOneFails, "prm", tiny_config(tmp_path, tiny_cache), world_size=2, num_cpus=0)
    try:
        for call in (lambda: group.call("values", stage="prm_values"),
                     lambda: group.start("values", stage="prm_values").result(),
                     lambda: group.run("values", stage="prm_values")):
            with pytest.raises(RoleError) as err:
                call()
            assert str(err.value).startswith("prm rank 1: stage 'prm_values' failed: ValueError('rank 1 ran out")
        assert group.run_rank0("values") == 0  # rank 0 alone is fine: the error above is rank 1's
    finally:
        group.kill()


def test_a_start_that_fails_half_way_leaves_no_actor_and_no_placement_group(ray_local, tmp_path, tiny_cache,
                                                                              tiny_policy):
    """Config and tokenizer are fine, the weights are not: the workers fail in setup, after all three roles'
    actors exist. On a shared cluster nothing but the trainer would ever free them."""
    import shutil

    from ray.util import placement_group_table

    broken = tmp_path / "broken-policy"
    shutil.copytree(tiny_policy, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    free_cpus = ray.available_resources().get("CPU", 0.0)
    groups = {k for k, v in placement_group_table().items() if v["state"] != "REMOVED"}
    cfg = tiny_config(tmp_path, tiny_cache)
    with pytest.raises(RoleError) as err:
        RLTrainer(cfg, str(broken))
    assert "stage 'setup' failed" in str(err.value)
    # every CPU the actors and their placement groups held is free again
    wait_for(lambda: ray.available_resources().get("CPU", 0.0) >= free_cpus, 60)
    assert {k for k, v in placement_group_table().items() if v["state"] != "REMOVED"} <= groups
