"""Issue 13 against real servers: a tracking server that goes away mid-run, and SIGTERM to a
sweep on the Ray launcher. ``pytest -m integration`` (PostgreSQL's programs and the cluster
extra are needed, as for tests/test_integration_server.py)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import TRAIN, wait_for
from tests.test_integration_server import server_script
from tests.test_integration_sweeps import private_env

pytestmark = pytest.mark.integration

REASON = "backprop_lab.failure_reason"


def job_runs(client, experiment: str = "backprop-lab"):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_a_server_that_goes_away_mid_run(tmp_path):
    """The job says at once that the store failed and trains on; on SIGTERM it ends saying what
    it kept; once the server is back, the next command records the run's real ending (KILLED,
    with both causes) from the job's summary.json: nothing stays RUNNING."""
    from mlflow.tracking import MlflowClient

    from backprop_lab.tracking.server import free_port

    folder = Path(tempfile.mkdtemp(prefix="backprop-lab-gone-"))
    folder.chmod(0o755)
    home, port = folder / "server", free_port()
    uri = f"http://127.0.0.1:{port}"
    try:
        started = server_script("start", "--dir", str(home), "--port", str(port))
        assert started.returncode == 0, started.stdout + started.stderr
        client = MlflowClient(uri)
        errors = tmp_path / "stderr.txt"
        with errors.open("w") as err_file:
            proc = subprocess.Popen(
                [sys.executable, str(TRAIN), "epochs=1000000", "progress=false", "figures=false",
                 f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                env=private_env(), stdout=subprocess.PIPE, stderr=err_file, text=True)
        try:
            run = wait_for(lambda: [r for r in job_runs(client) if r.data.metrics], proc,
                           timeout=180)[0]
            stopped = server_script("stop", "--dir", str(home))
            assert stopped.returncode == 0, stopped.stderr
            wait_for(lambda: "failed near epoch" in errors.read_text(), proc, timeout=120,
                     what="the job saying its store failed")
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
            err = errors.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 143 and "Traceback" not in err, err
        assert f"warning: the MLflow store {uri} failed near epoch" in err
        assert "the job's history.csv keeps every epoch" in err
        assert f"could not mark run {run.info.run_id} in {uri} as ended (ConnectionRefusedError" \
            in err
        assert f"history rows in {tmp_path / 'run' / 'history.csv'}" in err

        started = server_script("start", "--dir", str(home), "--port", str(port))
        assert started.returncode == 0, started.stdout + started.stderr
        assert client.get_run(run.info.run_id).info.status == "RUNNING"
        repair = subprocess.run([sys.executable, "-m", "backprop_lab.tracking.orphans", "--uri",
                                 uri, "--repair"], capture_output=True, text=True,
                                env=private_env(), timeout=120)
        assert repair.returncode == 0, repair.stderr
        ended = client.get_run(run.info.run_id)
        assert ended.info.status == "KILLED"
        reason = ended.data.tags[REASON]
        assert reason.startswith("interrupted by SIGTERM after ")
        assert "the tracking server stopped answering" in reason
        assert "(recorded later: the process could not end the run in the store)" in reason
        assert not [r for r in job_runs(client) if r.info.status == "RUNNING"]
    finally:
        server_script("stop", "--dir", str(home))
        shutil.rmtree(folder, ignore_errors=True)


def test_sigterm_reaches_the_jobs_of_a_ray_sweep(tmp_path):
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), "-m", "hydra/launcher=ray",
         "hydra.launcher.ray.init.num_cpus=2", "activation=tanh,relu,sigmoid",
         "epochs=1000000", "progress=false", f"tracking.uri={store}",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, env=private_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(store)
    db = tmp_path / "store" / "mlflow.db"
    try:
        wait_for(lambda: db.exists() and len([r for r in job_runs(client)
                                              if r.data.metrics]) >= 2, proc, timeout=300)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    runs = job_runs(client)
    assert not [r for r in runs if r.info.status == "RUNNING"], [
        (r.info.run_name, r.info.status) for r in runs]
    parents = [r for r in runs if r.data.tags.get("backprop_lab.role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("backprop_lab.role") == "job"]
    assert [p.info.status for p in parents] == ["KILLED"]
    assert len(jobs) >= 2 and {r.info.status for r in jobs} == {"KILLED"}
    for run in jobs:
        assert "SIGTERM" in run.data.tags[REASON], run.data.tags[REASON]
