"""Stopping on a signal: SIGINT (Ctrl-C), SIGTERM and SIGHUP all stop a run the same way.

What Slurm, Kubernetes and Ray send to cancel work is SIGTERM; a closed terminal sends SIGHUP;
Ctrl-C sends SIGINT. Each is handled like Ctrl-C always was: training stops, the metrics
recorded so far are flushed, the outputs saved and logged, and the run ends KILLED with the
signal named in its failure reason.

- The **first** signal asks for an orderly stop. Where training is interruptible (a single run,
  or the training loop of a job), :class:`Interrupted` (a KeyboardInterrupt) is raised at once;
  elsewhere (creating a run, saving outputs, the launching process of a sweep) the signal is
  only recorded and the code acts on it at its next safe point (:func:`received`).
- A **second** signal while stopping prints that saving is in progress and is otherwise ignored
  (Ctrl-C in a terminal reaches every process of a sweep, and the launching process forwards
  it as well, so a worker may see it twice).
- A **third** ends the process at once (exit status 128 + the signal number), saving nothing
  more; ``kill -9`` does the same. Runs left RUNNING that way are found later by the heartbeat
  check (tracking/orphans.py).

A sweep's launching process never raises: it forwards the signal to the jobs (``on_stop``
callbacks: the joblib workers get the same signal, Ray tasks are cancelled) and writes a stop
file in the sweep folder, so jobs not started yet end at once as "killed" without a run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by a stop signal; ``signame`` is e.g. "SIGTERM"."""

    def __init__(self, signame: str, message: str | None = None) -> None:
        super().__init__(signame)
        self.signame = signame
        self.message = message  # what was kept, said once by the entry point

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by it."""
        return 128 + int(getattr(signal, self.signame, signal.SIGINT))


class _State:
    def __init__(self) -> None:
        self.signame: str | None = None  # the first stop signal received
        self.count = 0
        self.raising = True  # raise Interrupted on the first signal (else only record it)
        self.callbacks: list[Callable[[str], None]] = []
        self.installed = False


_state = _State()


def received() -> str | None:
    """The name of the first stop signal this process received (None: none yet)."""
    return _state.signame


def reset() -> None:
    """Forget a previous stop (a worker process reused for the next sweep's job)."""
    _state.signame, _state.count = None, 0


def on_stop(callback: Callable[[str], None]) -> None:
    """Call ``callback(signame)`` when the first stop signal arrives (in the main thread)."""
    _state.callbacks.append(callback)


def clear_callbacks() -> None:
    _state.callbacks.clear()


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    _state.count += 1
    if _state.count == 1:
        _state.signame = name
        for callback in list(_state.callbacks):
            try:
                callback(name)
            except Exception as exc:  # forwarding is best effort; stopping goes on
                sys.stderr.write(f"warning: while stopping on {name}: {exc}\n")
        if _state.raising:
            raise Interrupted(name)
    elif _state.count == 2:
        sys.stderr.write(f"\nAlready stopping ({_state.signame}): saving what was recorded. "
                         "Send the signal once more to quit at once, saving nothing more.\n")
        sys.stderr.flush()
    else:
        os._exit(128 + signum)


def install(*, raising: bool = True) -> bool:
    """Handle the stop signals in this process (main thread only; False elsewhere); those
    it ignores stay ignored.

    ``raising``: raise :class:`Interrupted` on the first signal outside :func:`deferred`
    (single runs); False records it only (the launching process of a sweep).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in STOP_SIGNALS:
        # A signal the process was started ignoring stays ignored (`nohup` ignores SIGHUP, a
        # non-interactive shell's background jobs SIGINT), as Python itself does for SIGINT.
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, _handler)
    _state.installed = True
    _state.raising = raising
    return True


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the handlers for the duration of a job and restore the previous ones after
    (a Ray or joblib worker's own handlers); a signal already received is acted on at entry."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    was_installed, was_raising = _state.installed, _state.raising
    install(raising=was_raising if was_installed else True)
    try:
        yield
    finally:
        for sig, old in previous.items():
            if old is not None:
                signal.signal(sig, old)
        _state.installed, _state.raising = was_installed, was_raising


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section a signal must not cut in two (creating a run, ending it): a signal arriving
    inside is recorded, and acted on by the caller afterwards (:func:`received`)."""
    before, _state.raising = _state.raising, False
    try:
        yield
    finally:
        _state.raising = before


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """A section the first signal interrupts at once (training); raises at entry if a signal
    arrived before it."""
    before, _state.raising = _state.raising, True
    try:
        if _state.signame is not None and _state.count <= 1:
            raise Interrupted(_state.signame)
        yield
    finally:
        _state.raising = before


# -- the stop file of a sweep ----------------------------------------------------------------
def stop_file(sweep_dir: str | Path, sweep_id: str) -> Path:
    """The file whose presence tells a sweep's jobs not to start (it holds the signal name)."""
    return Path(sweep_dir) / f".stop-{sweep_id}"


def request_sweep_stop(sweep_dir: str | Path, sweep_id: str, signame: str) -> None:
    """Write the stop file atomically: a job reading it never sees it empty."""
    path = stop_file(sweep_dir, sweep_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(signame)
    os.replace(partial, path)


def sweep_stopped(sweep_dir: str | Path | None, sweep_id: str | None) -> str | None:
    """The signal that stopped the sweep (from its stop file), or None."""
    if sweep_dir is None or sweep_id is None:
        return None
    try:
        return stop_file(sweep_dir, sweep_id).read_text().strip() or "a stop signal"
    except OSError:
        return None


def child_workers(pid: int | None = None, marker: str = "loky") -> list[int]:
    """Process ids of this process's children whose command line contains ``marker`` and not
    ``resource_tracker`` (joblib's loky workers), read from /proc (empty elsewhere)."""
    pid = os.getpid() if pid is None else pid
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if marker in cmdline and "resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return found


def forward_to_workers(signame: str) -> None:
    """Send the signal on to this process's joblib (loky) worker processes."""
    sig = getattr(signal, signame)
    for pid in child_workers():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
