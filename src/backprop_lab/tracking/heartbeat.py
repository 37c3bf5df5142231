"""A run's sign of life: who writes it, and a time refreshed while that process lives.

Every run this package creates carries two tags (names in contract.py):

- ``backprop_lab.process``: ``"<host> <pid> <process start> <seconds between beats>"`` of the
  process that writes the run (the process start, from /proc, tells a reused pid apart);
- ``backprop_lab.heartbeat``: milliseconds since the epoch, set when the run is created and
  refreshed every ``$BACKPROP_LAB_HEARTBEAT_SECONDS`` (default 30) by a daemon thread of that
  process, whatever training is doing (a slow epoch does not stop it). On SQLite the write is
  queued on the store's writer thread; training never waits for it.

tracking/orphans.py reads both to tell a run whose process vanished (``kill -9``, the OOM
killer, a machine that died) from a live one.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from backprop_lab.contract import HEARTBEAT_TAG, PROCESS_TAG

HEARTBEAT_ENV = "BACKPROP_LAB_HEARTBEAT_SECONDS"
DEFAULT_SECONDS = 30.0


def interval() -> float:
    """Seconds between beats ($BACKPROP_LAB_HEARTBEAT_SECONDS, default 30)."""
    try:
        value = float(os.environ.get(HEARTBEAT_ENV, DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS
    return value if value > 0 else DEFAULT_SECONDS


def now_ms() -> int:
    return int(time.time() * 1000)


def process_start(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (/proc/<pid>/stat field 22);
    "" where /proc is not available or the process does not exist."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_identity() -> str:
    """The value of the process tag for this process."""
    pid = os.getpid()
    return f"{socket.gethostname()} {pid} {process_start(pid) or '-'} {interval():g}"


def start_tags() -> dict[str, str]:
    """The tags a new run gets: who writes it, and its first beat."""
    return {PROCESS_TAG: process_identity(), HEARTBEAT_TAG: str(now_ms())}


class Heartbeat:
    """Refreshes a run's heartbeat tag every :func:`interval` seconds until :meth:`stop`."""

    def __init__(self, backend, run_id: str, seconds: float | None = None) -> None:
        self.backend = backend
        self.run_id = run_id
        self.seconds = interval() if seconds is None else seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id[:8]}",
                                        daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.backend.set_tags(self.run_id, {HEARTBEAT_TAG: str(now_ms())})
            except Exception:  # a store that fails is reported by the run's own writes
                pass

    def stop(self) -> None:
        """No beat after this returns (one in flight is finished first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.seconds + 5)
