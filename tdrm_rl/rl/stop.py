"""Stopping a run on purpose: SIGTERM / Ctrl-C, and the NaN guard's limit.

The first SIGTERM or SIGINT only sets a flag: the driver finishes the step in flight, writes a
final checkpoint and stops. A second one interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional


class RunStopped(RuntimeError):
    """The run stopped before its last step for a reason the message gives (one line); `exit_code` for the CLI."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopSignals:
    """`with StopSignals() as stop: ... if stop.requested: ...` (handlers only in the main thread)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: Optional[int] = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt  # second signal: stop now
        self.requested = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested else ""

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
