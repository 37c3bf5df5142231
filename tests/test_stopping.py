"""harness/stopping.py in a small process of its own: the first signal interrupts, a second
one while saving is only reported, a third ends the process at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.conftest import REPO_ROOT

SCRIPT = """
import sys, time
sys.path.insert(0, {src!r})
from backprop_lab.harness import stopping
stopping.install(raising=True)
try:
    print("training", flush=True)
    while True:
        time.sleep(0.01)
except stopping.Interrupted as exc:
    print("interrupted", exc.signame, exc.exit_status, flush=True)
with stopping.deferred():
    print("saving", flush=True)
    time.sleep({saving})
print("saved", stopping.received(), flush=True)
"""


def launch(saving: float) -> subprocess.Popen:
    code = SCRIPT.format(src=str(REPO_ROOT / "src"), saving=saving)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline()
    assert line.startswith(expected), line


def test_first_interrupts_second_is_reported_third_quits():
    proc = launch(saving=2.0)
    try:
        wait_line(proc, "training")
        proc.send_signal(signal.SIGHUP)
        wait_line(proc, "interrupted SIGHUP 129")
        wait_line(proc, "saving")
        proc.send_signal(signal.SIGTERM)  # reported, saving goes on
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)  # the third: out at once
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "saved" not in out
    assert "Already stopping (SIGHUP): saving what was recorded." in err


def test_a_second_signal_does_not_cut_saving_short():
    proc = launch(saving=1.0)
    try:
        wait_line(proc, "training")
        proc.send_signal(signal.SIGINT)
        wait_line(proc, "interrupted SIGINT 130")
        wait_line(proc, "saving")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "saved SIGINT" in out
    assert "Traceback" not in err


def test_a_signal_the_process_ignores_stays_ignored():
    """``nohup`` starts a command with SIGHUP ignored: a closed terminal must not stop it."""
    code = SCRIPT.format(src=str(REPO_ROOT / "src"), saving=0.0)
    code = "import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN)\n" + code
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_line(proc, "training")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None  # still training
        proc.send_signal(signal.SIGTERM)
        wait_line(proc, "interrupted SIGTERM 143")
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "saved SIGTERM" in out


def test_a_job_reading_the_stop_file_never_sees_it_half_written(tmp_path):
    """Jobs poll the sweep's stop file while the launching process writes it: a reader must
    see either no file or the signal's name, never an empty file (CI once caught a job that
    recorded "a stop signal" instead of SIGINT)."""
    import threading

    from backprop_lab.harness import stopping

    seen: set[str | None] = set()
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.add(stopping.sweep_stopped(tmp_path, "s1"))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for _ in range(2000):
            stopping.request_sweep_stop(tmp_path, "s1", "SIGINT")
            stopping.stop_file(tmp_path, "s1").unlink()
    finally:
        done.set()
        reader.join()
    assert seen <= {None, "SIGINT"}, seen
    assert "SIGINT" in seen
    assert list(tmp_path.iterdir()) == []
