"""The harness against a real MLflow tracking server on 127.0.0.1 (marked integration)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import artifact_paths, cli_env, runs_of, split_roles, wait_for_health

pytestmark = pytest.mark.integration




@pytest.fixture
def server(tmp_path: Path):
    from backprop_lab.tracking.server import free_port

    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(uri, proc, timeout=90)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_sweep_into_a_tracking_server(run_cli, server, client_for, tmp_path):
    result = run_cli("-m", "activation=tanh,relu", "epochs=3", "figures=true",
                     f"tracking.uri={server}")
    assert result.returncode == 0, result.stderr
    client = client_for(server)
    parents, jobs = split_roles(runs_of(client))
    assert len(parents) == 1 and len(jobs) == 2
    assert {r.info.status for r in jobs} == {"FINISHED"}
    for run in jobs:
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 4
        assert {"history.csv", "figures/curves.png"} <= artifact_paths(client, run.info.run_id)
    assert list((tmp_path / "server-artifacts").rglob("history.csv"))  # stored by the server
    assert f"open {server} in a browser" in result.stdout
