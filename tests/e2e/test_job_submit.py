"""The cluster path: `ray start --head` then `ray job submit --working-dir . -- tdrm-rl train ...`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from tests.e2e.conftest import ROOT, TINY

BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited early with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise TimeoutError(f"the head node's dashboard did not open port {port} within {timeout:.0f} s")


def test_ray_job_submit_against_a_local_head_node(tmp_path, tiny_policy):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = free_port(), free_port()
    ray = os.path.join(BIN, "ray")
    # The test session's own Ray instance already holds the default agent ports (52365 and friends); a second head
    # node on the same ports starts without a job agent, so every port here is a free one.
    agent_ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                   f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
    # `--block` in its own process group: stopping it stops this head node only. (`ray stop` would kill every
    # Ray process on the machine, the test session's own cluster included.)
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
                             *agent_ports, "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             "--disable-usage-stats"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        wait_for_port(dashboard, head, timeout=180)
        out_dir = tmp_path / "job-run"
        cmd = [ray, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", ROOT, "--",
               os.path.join(BIN, "tdrm-rl"), "train", "recipes/grpo_tdrm.yaml", *TINY,
               f"model.policy_path={tiny_policy}", f"trainer.output_dir={out_dir}"]
        deadline = time.time() + 180
        while True:  # the dashboard answers before its job agent is up: retry until the agent takes it
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if "No available agent" not in proc.stdout + proc.stderr or time.time() > deadline:
                break
            time.sleep(3)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "succeeded" in proc.stdout
        rows = [json.loads(line) for line in open(out_dir / "metrics.jsonl")]
        assert max(r["step"] for r in rows) == 2
        assert (out_dir / "summary.json").exists()
        # A relative output folder would land in Ray's temporary copy of --working-dir: refused in one line (F12).
        relative = subprocess.run(cmd[:-1] + ["trainer.output_dir=runs/job-relative"], env=env, capture_output=True,
                                  text=True, timeout=300)
        assert relative.returncode != 0
        assert "trainer.output_dir=runs/job-relative is relative" in relative.stdout + relative.stderr
        assert not os.path.exists(os.path.join(ROOT, "runs", "job-relative"))
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
