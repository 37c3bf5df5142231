"""Shared fixtures: run the real CLI (`python train.py ...`) into a store in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
