"""The small real multirun the analysis tests read, and checks that it follows the contract.

``cli_sweep(tmp_path_factory)`` runs ``train.py -m`` once per test session (3 activations x
depths 2, 3 x seeds 0, 1 = 12 runs of 3 epochs) into a temporary SQLite store; the analysis,
report and notebook test modules share it through their own session fixtures that call it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from backprop_lab.engine.history import layer_metric_name

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

REPO = Path(__file__).resolve().parents[1]
ACTIVATIONS = ("sigmoid", "tanh", "relu")
DEPTHS = (2, 3)
SEEDS = (0, 1)
EPOCHS = 3
N_RUNS = len(ACTIVATIONS) * len(DEPTHS) * len(SEEDS)


@dataclass(frozen=True)
class CliSweep:
    uri: str
    root: Path
    parent_run_id: str
    log: str


_CACHE: dict[str, CliSweep] = {}


def subprocess_env() -> dict[str, str]:
    """The environment for child processes: no telemetry, the checkout's src importable."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def cli_sweep(tmp_path_factory: pytest.TempPathFactory) -> CliSweep:
    """Run the small multirun through the real CLI once per session and return its store."""
    if "sweep" in _CACHE:
        return _CACHE["sweep"]
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("analysis_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    command = [
        sys.executable, str(REPO / "train.py"), "-m",
        f"activation={','.join(ACTIVATIONS)}",
        "model=deep", f"model.depth={','.join(map(str, DEPTHS))}", "model.width=8",
        f"seed={','.join(map(str, SEEDS))}", f"epochs={EPOCHS}",
        "figures=false", "progress=false", "histogram_every=0",
        f"tracking.uri={uri}", f"hydra.sweep.dir={root / 'multirun'}",
    ]
    done = subprocess.run(command, cwd=root, env=subprocess_env(), capture_output=True,
                          text=True, timeout=600, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"train.py failed:\n{log[-4000:]}"
    client = MlflowClient(tracking_uri=uri)
    parents = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`backprop_lab.role` = 'sweep'",
    )
    assert len(parents) == 1, log[-4000:]
    _CACHE["sweep"] = CliSweep(uri, root, parents[0].info.run_id, log)
    return _CACHE["sweep"]


@pytest.fixture(scope="session")
def analysis_store(tmp_path_factory) -> CliSweep:
    return cli_sweep(tmp_path_factory)


def test_the_cli_store_follows_the_contract_the_loaders_rely_on(analysis_store):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=analysis_store.uri)
    parent = client.get_run(analysis_store.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{analysis_store.parent_run_id}'",
    )
    assert parent.data.tags["backprop_lab.role"] == "sweep"
    assert len(children) == N_RUNS
    for run in children:
        params, tags = run.data.params, run.data.tags
        assert tags["backprop_lab.role"] == "job"
        assert tags["backprop_lab.outcome"] == "finished"
        for key in ("activation", "seed", "net.depth", "net.n_layers", "net.width",
                    "net.init", "net.repr"):
            assert key in params, f"param {key} missing from run {run.info.run_name}"
        n_layers = int(params["net.n_layers"])
        assert layer_metric_name("grad_norm", n_layers) in run.data.metrics
        assert "history.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
