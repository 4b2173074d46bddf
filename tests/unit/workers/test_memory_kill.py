"""A worker that Ray's memory monitor kills surfaces as that role's WorkerDied (the trainer restarts it and retries
the step), not as a raw ray.exceptions.OutOfMemoryError traceback (seen in a SmolLM2 run on a shared box).

The kill is real: a fresh local Ray instance whose memory threshold is below the node's current use, so the
monitor kills the worker that runs a task. It runs in a child process: the threshold is read when Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.e2e  # starts its own Ray instance

CHILD = textwrap.dedent("""
    import os, sys, time
    os.environ["RAY_memory_usage_threshold"] = "0.01"  # below any node's use: the monitor kills a running task
    os.environ["RAY_memory_monitor_refresh_ms"] = "100"
    import ray
    from tdrm_rl.config import load_config
    from tdrm_rl.workers.base import BaseWorker
    from tdrm_rl.workers.group import WorkerDied, WorkerGroup

    class Holder(BaseWorker):
        def setup(self):
            pass

        def hold(self):
            time.sleep(120)
            return 1

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = load_config(None, [f"trainer.output_dir={sys.argv[1]}", "trainer.torch_threads=1"])
    try:  # the kill comes in the actor's start or in hold(), whichever runs when the monitor looks
        group = WorkerGroup(Holder, "prm", cfg, num_cpus=0)
        group.timeout = 90.0
        group.call("hold")
        print("RESULT no error")
    except WorkerDied as e:
        print("RESULT WorkerDied", e.role, "|", e)
    except Exception as e:
        print("RESULT", type(e).__name__, str(e)[:200])
""")


def test_a_memory_monitor_kill_is_the_roles_worker_death(tmp_path):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=240, env=env)
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    assert result, out.stdout[-2000:] + out.stderr[-2000:]
    assert result[-1].startswith("RESULT WorkerDied prm |"), result[-1]
    assert "killed by Ray's memory monitor during stage" in result[-1] and "(the node ran low on memory)" in result[-1]
