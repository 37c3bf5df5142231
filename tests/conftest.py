"""Shared fixtures: run the real CLI (`python train.py ...`) into a store in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def _fake_mnist_home() -> str:
    """A scikit-learn data folder holding a small made-up MNIST cache (40 images of 784
    pixels, 4 a class), so that no test reads a real cache or reaches the network for
    dataset=mnist; child processes inherit it through SCIKIT_LEARN_DATA."""
    import tempfile

    import numpy as np

    home = Path(tempfile.mkdtemp(prefix="backprop-lab-sklearn-data-"))
    (home / "backprop_lab").mkdir()
    rng = np.random.default_rng(0)
    np.savez_compressed(home / "backprop_lab" / "mnist_784.npz",
                        pixels=rng.integers(0, 256, (40, 784)).astype(np.uint8),
                        labels=np.tile(np.arange(10), 4))
    return str(home)


os.environ["SCIKIT_LEARN_DATA"] = _fake_mnist_home()

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = REPO_ROOT / "train.py"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", HYDRA_FULL_ERROR="0")
    env.update(extra)
    return env


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A tracking URI of a SQLite file that does not exist yet."""
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture
def run_cli(tmp_path: Path):
    """Run train.py from ``tmp_path`` (never the repo) with Hydra's folders inside it."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 300,
            **env: str) -> subprocess.CompletedProcess:
        folders = [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
        return subprocess.run(
            [sys.executable, str(TRAIN), *args, *folders],
            cwd=cwd or tmp_path, env=cli_env(**env), capture_output=True, text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def client_for():
    def make(uri: str):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=uri)

    return make


@pytest.fixture
def rows_of():
    """The rows of a table of a SQLite store for one run, without run_uuid, sorted: two runs
    written the same way give equal lists."""
    import sqlite3

    def rows(db: Path, table: str, run_id: str) -> list[tuple]:
        con = sqlite3.connect(db)
        try:
            columns = [c[1] for c in con.execute(f"PRAGMA table_info({table})")
                       if c[1] != "run_uuid"]
            order = ", ".join(columns)
            return con.execute(f"SELECT {order} FROM {table} WHERE run_uuid = ? ORDER BY {order}",
                               (run_id,)).fetchall()
        finally:
            con.close()

    return rows


def wait_for(condition: Callable[[], Any], proc: subprocess.Popen | None = None, *,
             timeout: float = 120, what: str = "the condition", every: float = 0.1) -> Any:
    """The first truthy value of ``condition()``, polled every ``every`` seconds.

    Fails the test naming ``what`` after ``timeout`` seconds, or as soon as ``proc`` (when
    given) has ended without the condition met, with the end of its output.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            found = condition()  # what the process did just before it ended
            if found:
                return found
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"{what}: not met before the process ended ({proc.returncode})\n"
                        f"{(out or '')[-2000:]}\n{(err or '')[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not met within {timeout:g} s")
        time.sleep(every)


def wait_for_health(uri: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the MLflow server ``proc`` at ``uri`` answers ``/health`` with 200."""
    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    wait_for(answers, proc, timeout=timeout, what=f"the MLflow server at {uri} answering",
             every=0.5)


def stop_handlers_installed(pid: int) -> bool:
    """Whether process ``pid`` catches SIGHUP: Python does not by default, so it does once the
    harness has installed its stop handlers (harness/stopping.py, ``install``) (Linux: reads the
    caught-signals mask of /proc/PID/status)."""
    import signal

    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(int(line.split()[1], 16) for line in status.splitlines()
                  if line.startswith("SigCgt:"))
    return bool(caught >> (signal.SIGHUP - 1) & 1)


# -- MLflow runs of a store, as the CLI tests read them ------------------------------------------
def runs_of(client, experiment: str = "backprop-lab"):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=1000)


def split_roles(runs):
    parents = [r for r in runs if r.data.tags.get("backprop_lab.role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("backprop_lab.role") == "job"]
    return parents, jobs


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= artifact_paths(client, run_id, item.path)
        else:
            found.add(item.path)
    return found


# -- training processes in the background --------------------------------------------------------
def start_train(tmp_path: Path, store: str, *args: str, **env: str) -> subprocess.Popen:
    """``python train.py ARGS`` into ``store`` in the background (run and sweep folders under
    ``tmp_path``; ``env``: extra environment variables)."""
    folders = [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *args, "progress=false", "figures=false",
         f"tracking.uri={store}", *folders], cwd=tmp_path, env=cli_env(**env), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def wait_for_metrics(proc: subprocess.Popen, client, n_runs: int = 1,
                     timeout: float = 120) -> list:
    """The store's job runs once ``n_runs`` of them have logged metrics."""
    db = Path(client.tracking_uri[len("sqlite:///"):])

    def running() -> list | None:
        if not db.exists():  # MLflow's client would create (and migrate) it: let train.py
            return None
        try:
            jobs = split_roles(runs_of(client))[1]
        except Exception:  # the store is being created
            return None
        found = [r for r in jobs if r.data.metrics]
        return found if len(found) >= n_runs else None

    return wait_for(running, proc, timeout=timeout, what=f"metrics from {n_runs} run(s)",
                    every=0.3)


def stop(proc: subprocess.Popen, sig: int, timeout: float = 90) -> tuple[str, str]:
    try:
        proc.send_signal(sig)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (needs root and mount rights; skipped otherwise)."""
    mounted = []

    def mount(name: str, size: str, *options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}",
                                                                        *options]),
                               "tmpfs", str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
