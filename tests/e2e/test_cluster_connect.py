"""Joining a cluster, or starting a local one, is bounded: `tdrm-rl train` with an address nothing answers at
(or one where something that is not a Ray GCS listens, or a local IP this machine does not have) exits 2 within
60 s with one line naming the address, and leaves no Ray process behind. Real subprocesses, real sockets."""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECIPE = os.path.join(ROOT, "recipes", "grpo_tdrm.yaml")
CLI = [sys.executable, "-m", "tdrm_rl.cli.main", "train", RECIPE]


def free_port() -> int:
    """A port nothing listens on (on every address: Ray dials this node's IP for 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> list[str]:
    """Processes still in session `sid` (the CLI ran as its leader: anything it started stays in it)."""
    left = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after ")": state ppid pgrp session
            left.append(stat.split("/")[2])
    return left


def run_cli(tmp_path, *overrides: str, ray_address: str | None = None) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    start = time.monotonic()
    proc = subprocess.Popen(CLI + [f"model.cache_dir={tmp_path}/cache", f"trainer.output_dir={tmp_path}/run",
                                   *overrides], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        pytest.fail(f"tdrm-rl train {' '.join(overrides)} still running after 60 s")
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    assert session_processes(proc.pid) == [], "a process the CLI started is still running"
    assert not glob.glob(f"/tmp/ray/session_*_{proc.pid}"), "the CLI started a local Ray instance"
    assert not os.path.exists(f"{tmp_path}/run"), "the run started"
    assert not os.path.exists(f"{tmp_path}/cache"), "the SFT warm start ran"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), elapsed


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_unreachable_address_fails_fast_with_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    result, elapsed = run_cli(tmp_path, f"cluster.address={address}", "cluster.connect_timeout_s=5")
    line = one_line(result)
    assert elapsed < 60
    assert f"cluster.address={address}" in line and "connection refused" in line
    assert "ray status" in line and "RAY_ADDRESS" in line and "port" in line
    print(f"failed in {elapsed:.1f}s: {line}")


class Sink:
    """Accepts TCP connections and never answers: a wrong port with some other service on it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_listener_that_is_not_ray_fails_within_the_timeout(tmp_path):
    sink = Sink()
    try:
        address = f"127.0.0.1:{sink.port}"
        result, elapsed = run_cli(tmp_path, f"cluster.address={address}", "cluster.connect_timeout_s=5")
    finally:
        sink.close()
    line = one_line(result)
    assert f"cluster.address={address}" in line
    assert "does not answer as a Ray GCS" in line or "no Ray GCS answered" in line
    assert elapsed < 5 + 15  # the timeout plus interpreter start-up, not Ray's 20 retries of 40 s


@pytest.mark.parametrize("address, words", [
    ("http://127.0.0.1:8265", "ray job submit --address http://127.0.0.1:8265"),
    ("ray://127.0.0.1:{port}", "Ray Client"),
    ("127.0.0.1", "not host:port"),
])
def test_other_address_forms_name_what_was_tried(tmp_path, address, words):
    address = address.format(port=free_port())
    result, _ = run_cli(tmp_path, f"cluster.address={address}", "cluster.connect_timeout_s=5")
    line = one_line(result)
    assert f"cluster.address={address}" in line and words in line


def test_ray_address_variable_is_named(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    result, _ = run_cli(tmp_path, "cluster.connect_timeout_s=5", ray_address=address)
    line = one_line(result)
    assert f"RAY_ADDRESS={address}" in line and "connection refused" in line


def test_local_start_on_an_ip_this_machine_lacks_fails_fast(tmp_path):
    result, elapsed = run_cli(tmp_path, "cluster.node_ip_address=203.0.113.7", "cluster.connect_timeout_s=5")
    line = one_line(result)
    assert "cluster.node_ip_address=203.0.113.7" in line and "cannot bind" in line
    assert elapsed < 60
