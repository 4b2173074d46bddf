"""Run answer checkers in a child process with a hard deadline per call.

math-verify bounds its own work with `signal.alarm`, which works only in a process's main thread
(not in a threaded server or a thread pool), and some inputs spend their time inside C code
(regex, big-integer arithmetic) where no signal is handled promptly. Third-party scorers
(reasoning-gym) have no bound at all. So checks run in a child process: `CheckerProcess.call`
sends one call at a time over a pipe and waits at most `timeout_s`; a child that misses the
deadline is killed (a fresh one starts on the next call) and the call returns None. The caller's
thread never runs the checker, so a pathological answer cannot hang a driver or a Ray actor.

The child is a plain `python -c` subprocess, not multiprocessing: spawn/forkserver re-import the
parent's __main__ (a Ray worker, pytest), and fork is unsafe in a process with threads.
Requests and replies are JSON; a request names a tdrm_rl function by module and qualified name.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

# The child imports its checker's libraries (sympy, math-verify) lazily: slow on a loaded machine.
START_TIMEOUT_S = 120.0
# What a checker returns when its own time limit ended the check (math-verify's signal alarm): counted in
# `timeouts` with the deadline's cut-offs, and the call returns None.
TIMED_OUT = "timed out"


def serve() -> None:
    """Child loop: one JSON {"fn": "module:qualname", "args": [...]} per stdin line -> one JSON reply line."""
    import logging

    logging.disable(logging.CRITICAL)  # checkers log whole inputs on timeouts and parse errors
    out = sys.stdout
    out.write('"ready"\n')
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            module, _, qualname = request["fn"].partition(":")
            if not module.startswith("tdrm_rl."):  # the child runs the project's checkers and nothing else
                raise ValueError(module)
            fn: Any = importlib.import_module(module)
            for part in qualname.split("."):
                fn = getattr(fn, part)
            reply = json.dumps(fn(*request["args"]))
        except Exception:  # a failed check is a wrong answer, never a dead server
            reply = "null"
        out.write(reply + "\n")
        out.flush()


def _read_line(proc: subprocess.Popen, timeout: float) -> Optional[str]:
    """One reply line from the child, or None on deadline / child death."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        buf += chunk
    return buf.decode().strip()


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass


class CheckerProcess:
    """A child process that runs module-level functions with a deadline per call. Thread-safe."""

    def __init__(self, timeout_s: float = 5.0, warmup: Optional[tuple[Callable, tuple]] = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"checker timeout must be > 0 seconds, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.warmup = warmup  # a call made right after start, outside the deadline (library imports)
        self.timeouts = 0  # calls cut off by the deadline (their child was killed) or by the checker's own limit
        self.starts = 0
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        # The child finds tdrm_rl the way this process did, installed or not (Ray workers, tests).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = subprocess.Popen([sys.executable, "-c", "from tdrm_rl.tasks.bounded import serve; serve()"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=env, close_fds=True)
        ok = _read_line(proc, START_TIMEOUT_S) == '"ready"'
        if ok and self.warmup is not None:
            ok = self._send(proc, *self.warmup) and _read_line(proc, START_TIMEOUT_S) is not None
        if not ok:
            _kill(proc)
            raise RuntimeError(f"answer-checker child process did not start within {START_TIMEOUT_S:.0f} s")
        self.starts += 1
        return proc

    @staticmethod
    def _send(proc: subprocess.Popen, fn: Callable, args: tuple) -> bool:
        try:
            # default=str: a scorer entry may carry values JSON has no type for (they arrive as text).
            request = json.dumps({"fn": f"{fn.__module__}:{fn.__qualname__}", "args": list(args)}, default=str)
            proc.stdin.write(request.encode() + b"\n")
            proc.stdin.flush()
            return True
        except OSError:
            return False

    def call(self, fn: Callable, *args: Any) -> Any:
        """`fn(*args)` in the child (JSON-able result), or None on deadline, TIMED_OUT, error or child death."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            reply = _read_line(proc, self.timeout_s) if self._send(proc, fn, args) else None
            if reply is None:
                self.timeouts += 1
                _kill(proc)
                self._proc = None
                return None
            result = json.loads(reply)
            if result == TIMED_OUT:
                self.timeouts += 1
                return None
            return result

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                _kill(self._proc)
                self._proc = None


_shared: dict[tuple, CheckerProcess] = {}
_shared_lock = threading.Lock()


def _close_all() -> None:
    for checker in list(_shared.values()):
        checker.close()


def timeouts_so_far() -> int:
    """Checks this process's shared checkers cut off at their deadline so far (the step reports the difference)."""
    with _shared_lock:
        return sum(checker.timeouts for checker in _shared.values())


def shared_checker(kind: str, timeout_s: float, warmup: Optional[tuple[Callable, tuple]] = None) -> CheckerProcess:
    """One child per process, kind and timeout (created on first use, closed at exit)."""
    key = (kind, float(timeout_s))
    with _shared_lock:
        if key not in _shared:
            if not _shared:
                atexit.register(_close_all)
            _shared[key] = CheckerProcess(timeout_s, warmup)
        return _shared[key]
