"""Every way a run can end is recorded (issue 13): stop signals in single runs and sweeps, runs
whose process vanished, concurrent first use of a store, the bad values that used to reach a
run, and faults of the store itself. Real CLI processes, real SQLite stores, read back with
MLflow's client."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import (
    TRAIN,
    artifact_paths,
    cli_env,
    runs_of,
    split_roles,
    start_train,
    stop,
    stop_handlers_installed,
    wait_for,
    wait_for_metrics,
)

OUTCOME, REASON = "backprop_lab.outcome", "backprop_lab.failure_reason"


# -- stop signals -------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_ends_a_single_run_killed_with_everything_kept(sig, tmp_path, store,
                                                                     client_for):
    client = client_for(store)
    proc = start_train(tmp_path, store, "epochs=300000")
    (run,) = wait_for_metrics(proc, client)
    out, err = stop(proc, sig)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err + out
    name = signal.Signals(sig).name
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"Interrupted by {name}: run {run.info.run_id} in {store} marked KILLED "
                     f"with its metrics; kept {lines[0].split('kept ')[1]}"], err
    run = client.get_run(run.info.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[OUTCOME] == "killed"
    assert run.data.tags[REASON].startswith(f"interrupted by {name} after ")
    history = pd.read_csv(tmp_path / "run" / "history.csv", index_col="epoch")
    assert f"kept {len(history)} history rows in" in lines[0]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == len(history)
    assert {"history.csv", "weights.npz", "config.yaml"} <= artifact_paths(client,
                                                                          run.info.run_id)


def test_sigterm_stops_a_sweep_its_running_job_killed_the_rest_not_started(tmp_path, store,
                                                                           client_for):
    client = client_for(store)
    proc = start_train(tmp_path, store, "-m", "activation=tanh,relu,sigmoid", "epochs=300000")
    wait_for_metrics(proc, client)
    out, err = stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "Traceback" not in out + err
    assert "Interrupted by SIGTERM: every job's run ended" in err
    assert out.count("not started: the sweep was stopped by SIGTERM") == 2
    parents, jobs = split_roles(runs_of(client))
    assert [r.info.status for r in parents] == ["KILLED"]
    assert parents[0].data.tags[REASON].startswith("interrupted by SIGTERM")
    assert [(r.info.run_name, r.info.status) for r in jobs] == [("tanh", "KILLED")]
    assert "SIGTERM" in jobs[0].data.tags[REASON]


@pytest.mark.parametrize("sig, group", [
    (signal.SIGTERM, False),  # to the launching process only (Kubernetes, a plain kill)
    pytest.param(signal.SIGINT, True, marks=pytest.mark.slow),  # Ctrl-C: every process
])
def test_a_stop_signal_reaches_the_jobs_of_a_joblib_sweep(sig, group, tmp_path, store,
                                                          client_for):
    """The launching process passes the signal on to its loky workers (or they get it
    themselves, with the whole process group): both running jobs end KILLED with their
    metrics, the third never starts."""
    client = client_for(store)
    folders = [f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         "activation=tanh,relu,sigmoid", "epochs=300000", "progress=false",
         f"tracking.uri={store}", *folders], cwd=tmp_path, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=group)
    wait_for_metrics(proc, client, n_runs=2, timeout=180)
    if group:
        os.killpg(proc.pid, sig)
        out, err = stop(proc, 0)
    else:
        out, err = stop(proc, sig)
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in out + err
    parents, jobs = split_roles(runs_of(client))
    assert [r.info.status for r in parents] == ["KILLED"]
    assert len(jobs) == 2 and {r.info.status for r in jobs} == {"KILLED"}
    for run in jobs:
        assert run.data.tags[REASON].startswith(f"interrupted by {name}")
        saved = pd.read_csv(f"{run.data.tags['backprop_lab.output_dir']}/history.csv")
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == len(saved)
    assert f"not started: the sweep was stopped by {name}" in out


# -- runs whose process vanished ------------------------------------------------------------------
def test_a_killed_run_is_marked_failed_by_the_next_command_and_the_repair_command(
        tmp_path, store, client_for):
    client = client_for(store)
    # A short heartbeat, so the test also sees the tag refreshed while training.
    proc = start_train(tmp_path, store, "epochs=300000", BACKPROP_LAB_HEARTBEAT_SECONDS="0.3")
    (run,) = wait_for_metrics(proc, client)

    def beat() -> int:
        return int(client.get_run(run.info.run_id).data.tags["backprop_lab.heartbeat"])

    first = beat()
    wait_for(lambda: beat() > first, proc, timeout=30,
             what="the heartbeat refreshed while training")
    stop(proc, signal.SIGKILL)
    assert client.get_run(run.info.run_id).info.status == "RUNNING"

    listed = subprocess.run([sys.executable, "-m", "backprop_lab.tracking.orphans", "--uri",
                             store], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert f"{run.info.run_id}  orphaned" in listed.stdout and "--repair" in listed.stdout
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # listing changes nothing

    later_command = subprocess.run(
        [sys.executable, str(TRAIN), "epochs=2", "progress=false", "figures=false",
         f"tracking.uri={store}", f"hydra.run.dir={tmp_path / 'later'}"],
        cwd=tmp_path, capture_output=True, text=True, env=cli_env(), timeout=120)
    assert later_command.returncode == 0, later_command.stderr
    assert f"Marked run {run.info.run_id}" in later_command.stdout
    orphan = client.get_run(run.info.run_id)
    assert orphan.info.status == "FAILED"
    assert orphan.data.tags[OUTCOME] == "failed"
    assert f"process {proc.pid} on" in orphan.data.tags[REASON]
    assert "ended without closing the run" in orphan.data.tags[REASON]
    assert {r.info.status for r in runs_of(client)} == {"FAILED", "FINISHED"}

    repaired = subprocess.run([sys.executable, "-m", "backprop_lab.tracking.orphans", "--uri",
                               store, "--repair"], capture_output=True, text=True,
                              env=cli_env(), timeout=120)
    assert repaired.returncode == 0 and "No RUNNING runs" in repaired.stdout


def test_the_orphan_check_never_marks_a_live_run(tmp_path):
    """Runs of live processes (this one; another host that beat recently) and runs without
    heartbeat tags stay RUNNING; a dead pid, a reused pid and a silent remote host do not."""
    from backprop_lab.contract import HEARTBEAT_TAG, PROCESS_TAG
    from backprop_lab.tracking import create_run, ensure_experiment, open_store
    from backprop_lab.tracking.heartbeat import process_identity
    from backprop_lab.tracking.orphans import check

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = ensure_experiment(uri, "orphans")
    now = int(time.time() * 1000)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host, pid, started, every = process_identity().split()
    cases = {
        "this process": {},  # create_run's own tags
        "dead pid": {PROCESS_TAG: f"{host} {dead} 1 30"},
        "reused pid": {PROCESS_TAG: f"{host} {pid} 12345 30"},
        "remote, recent beat": {PROCESS_TAG: "elsewhere 7 1 30", HEARTBEAT_TAG: str(now - 60_000)},
        "remote, silent": {PROCESS_TAG: "elsewhere 7 1 30", HEARTBEAT_TAG: str(now - 600_000)},
    }
    ids = {name: create_run(uri, exp, name, tags=tags) for name, tags in cases.items()}
    backend = open_store(uri)
    with sqlite3.connect(tmp_path / "mlflow.db") as con:  # a run made by another tool
        con.execute("DELETE FROM tags WHERE run_uuid = ? AND key IN (?, ?)",
                    (ids.setdefault("untagged", create_run(uri, exp, "untagged")),
                     PROCESS_TAG, HEARTBEAT_TAG))
    verdicts = {v.run.name: v.state for v in check(backend, [exp], repair=True)}
    assert verdicts == {"this process": "alive", "dead pid": "orphaned",
                        "reused pid": "orphaned", "remote, recent beat": "alive",
                        "remote, silent": "orphaned", "untagged": "unknown"}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"this process": "RUNNING", "dead pid": "FAILED", "reused pid": "FAILED",
                      "remote, recent beat": "RUNNING", "remote, silent": "FAILED",
                      "untagged": "RUNNING"}
    assert "no heartbeat from process 7 on elsewhere" in client.get_run(
        ids["remote, silent"]).data.tags[REASON]


# -- concurrent first use -----------------------------------------------------------------------
def test_four_commands_at_once_on_a_store_that_does_not_exist(tmp_path, store, client_for):
    procs = [subprocess.Popen(
        [sys.executable, str(TRAIN), "epochs=5", "progress=false", "figures=false",
         f"seed={i}", f"tracking.uri={store}", f"hydra.run.dir={tmp_path / f'run{i}'}"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outputs]
    runs = runs_of(client_for(store))
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert not list((tmp_path / "store").glob(".mlflow.db.*.tmp"))  # no leftovers


# -- bad values that used to reach a run ----------------------------------------------------------
def test_softmax_ce_on_two_classes_just_works(run_cli, store, client_for):
    result = run_cli("model.output=softmax_ce", "epochs=30", "figures=true",
                     f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    (run,) = runs_of(client_for(store))
    assert run.info.status == "FINISHED"
    assert run.data.params["net.output"] == "softmax_ce"
    assert run.data.params["net.repr"].startswith("MLP(2-16-8-2")
    assert run.data.metrics["train/accuracy"] > 0.6


def test_a_diverging_mse_run_is_reported_diverged_with_its_histograms(run_cli, store,
                                                                      client_for, tmp_path):
    result = run_cli("-m", "optimizer.lr=0.5,1e6", "model.output=mse", "epochs=200",
                     "histogram_every=5", "figures=true", f"tracking.uri={store}")
    assert result.returncode == 1  # one job did not finish
    assert "Traceback" not in result.stdout + result.stderr
    client = client_for(store)
    jobs = {r.info.run_name: r for r in split_roles(runs_of(client))[1]}
    assert jobs["lr0.5"].info.status == "FINISHED"
    bad = jobs["lr1000000.0"]
    assert bad.info.status == "FAILED" and bad.data.tags[OUTCOME] == "diverged"
    assert bad.data.tags[REASON].startswith("training loss not finite at epoch ")
    saved = np.load(Path(bad.data.tags["backprop_lab.output_dir"]) / "histograms.npz")
    assert np.isfinite(saved["edges"]).all() and saved["counts"].sum() > 0
    assert {"histograms.npz", "figures/curves.png"} <= artifact_paths(client, bad.info.run_id)

    # The sweep's report (figures and summary of both runs, inf losses included).
    from backprop_lab.analysis.report import main as report

    assert report(["--uri", store, "--out", str(tmp_path / "report"), "--no-log"]) == 0
    assert "lr1000000.0" in (tmp_path / "report" / "summary.md").read_text()


def test_epochs_too_large_for_memory_is_rejected_before_any_run(run_cli, store, tmp_path):
    result = run_cli("epochs=10000000000", f"tracking.uri={store}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert "epochs=10000000000: too many epochs: the history of 10000000000 epochs needs" \
        in result.stderr
    assert not (tmp_path / "store").exists()


def test_non_finite_histograms_never_fail():
    from backprop_lab.engine.diagnostics import finite_histogram

    for values in ([-1.7e308, 1.7e308, np.inf, np.nan, 0.0], [np.nan, np.inf], [2.0, 2.0], []):
        counts, edges = finite_histogram(np.array(values, dtype=float))
        assert np.isfinite(edges).all() and np.all(np.diff(edges) > 0)
        assert counts.sum() == np.isfinite(values).sum()


# -- faults of the store ------------------------------------------------------------------------
def test_a_corrupted_store_is_named_and_nothing_is_created(run_cli, tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(b"not a database" * 1000)
    result = run_cli("epochs=2", f"tracking.uri=sqlite:///{db}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{db} is not a readable MLflow store (file is not a database)" in result.stderr
    assert "move it aside" in result.stderr
    assert db.read_bytes() == b"not a database" * 1000


def test_a_read_only_store_is_named_before_any_run(run_cli, tmpfs, client_for):
    folder = tmpfs("ro", "4m")
    uri = f"sqlite:///{folder / 's' / 'mlflow.db'}"
    assert run_cli("epochs=2", "figures=false", f"tracking.uri={uri}").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    result = run_cli("epochs=2", f"tracking.uri={uri}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the store's folder is read-only or not writable" in result.stderr
    assert "nothing was created" in result.stderr
    assert [r.info.status for r in runs_of(client_for(uri))] == ["FINISHED"]

    new = run_cli("epochs=2", f"tracking.uri=sqlite:///{folder / 'new' / 'mlflow.db'}")
    assert new.returncode == 1 and "read-only or not writable" in new.stderr


def test_a_full_disk_fails_the_run_with_its_cause_and_keeps_the_history(run_cli, tmpfs,
                                                                        client_for, tmp_path):
    folder = tmpfs("full", "1500k")
    uri = f"sqlite:///{folder / 's' / 'mlflow.db'}"
    result = run_cli("epochs=3000", "figures=false", f"tracking.uri={uri}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (run,) = runs_of(client_for(uri))
    assert run.info.status == "FAILED"
    assert run.data.tags[REASON].startswith("the MLflow store failed: the disk is full")
    assert "marked FAILED with the metrics written before the store failed; kept 3001 " \
           f"history rows in {tmp_path / 'run' / 'history.csv'}" in result.stderr
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 3001


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_ctrl_c_before_any_run_says_so(tmp_path, store, client_for):
    # Training cannot end by itself first, and the signal comes as soon as the stop handlers are
    # in (before them it would be Python's own KeyboardInterrupt): long before a run exists.
    proc = start_train(tmp_path, store, "epochs=300000")
    wait_for(lambda: stop_handlers_installed(proc.pid), proc, timeout=60,
             what="the stop handlers installed", every=0.005)
    out, err = stop(proc, signal.SIGINT)
    assert "Traceback" not in err
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == \
        "Interrupted by SIGINT: stopped before any run was created."
    db = Path(store[len("sqlite:///"):])
    assert not db.exists() or runs_of(client_for(store)) == []
