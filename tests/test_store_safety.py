"""No store that loses data, nothing lost that the job recorded, any grid sweep resumable
(issue 19): in-memory and damaged stores refused before any run, bad values before any run,
history.csv on disk block by block, the restore command after a full disk and kill -9, and an
interrupted grid sweep resumed under its parent. Real CLI processes, real SQLite stores."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backprop_lab.engine.history import is_log10_companion
from backprop_lab.harness.build import build
from backprop_lab.harness.config import ConfigError
from backprop_lab.tracking.run_tracker import COMPANION_POINTS, companion_rows
from tests.conftest import TRAIN, cli_env, runs_of, split_roles, start_train, stop, wait_for_metrics
from tests.test_configs import make

OUTCOME, REASON = "backprop_lab.outcome", "backprop_lab.failure_reason"


def restore(uri: str, *run_ids: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backprop_lab.tracking.restore", *run_ids,
                           "--uri", uri], capture_output=True, text=True, env=cli_env(),
                          timeout=300)


def metric_rows(db: Path, run_id: str) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM metrics WHERE run_uuid = ?",
                           (run_id,)).fetchone()[0]
    finally:
        con.close()


# -- bad values, before any run ---------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("dataset.noise=nan", "dataset.noise=nan: must be a finite number from 0 to 1000"),
    ("dataset.noise=inf", "dataset.noise=inf: must be a finite number"),
    ("dataset.noise=1e300", "dataset.noise=1e+300: must be a finite number"),
    ("tracking.experiment=''", "tracking.experiment='': an experiment needs a name"),
    ("tracking.experiment=" + "e" * 501, "tracking.experiment: 501 characters; MLflow allows "
                                         "at most 500"),
    ("tracking.uri=sqlite://", "tracking.uri=sqlite://: a SQLite URI without a file path is "
                               "an in-memory database"),
    ("tracking.uri=sqlite:///:memory:", "in-memory database, which keeps nothing"),
    ("tracking.uri=:memory:", "an in-memory SQLite database keeps nothing"),
    ("tracking.uri=postgresql://u:pw@h/db", "name the driver: postgresql+psycopg2://***@h/db"),
    ("tracking.uri=foo://bar", "unsupported tracking URI scheme 'foo'; supported: sqlite:///"),
])
def test_bad_values_are_named_before_any_run(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(make([override]))


def test_an_in_memory_store_is_refused_before_any_run(run_cli, tmp_path):
    for uri in ("sqlite://", "sqlite:///:memory:"):
        result = run_cli("epochs=2", f"tracking.uri={uri}")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "in-memory database, which keeps nothing" in result.stderr
        assert "[finished]" not in result.stdout
    found = subprocess.run([sys.executable, str(TRAIN), "epochs=2"], cwd=tmp_path,
                           env=cli_env(MLFLOW_TRACKING_URI="sqlite://"), capture_output=True,
                           text=True, timeout=120)
    assert found.returncode == 1 and "MLFLOW_TRACKING_URI=sqlite://: " in found.stderr
    assert not list(tmp_path.rglob("*.db"))


def test_a_sweep_folder_that_cannot_be_made_is_one_line_before_the_parent_run(
        run_cli, tmp_path, store, client_for):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, str(TRAIN), "-m", "activation=tanh,relu", "epochs=2",
         f"tracking.uri={store}", f"hydra.sweep.dir={blocker / 'sweep'}"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: the sweep folder hydra.sweep.dir={blocker / 'sweep'} "
                               "cannot be created or written: Not a directory")
    assert runs_of(client_for(store)) == []


# -- damaged stores ---------------------------------------------------------------------------
def damage(db: Path) -> bytes:
    """Overwrite the headers of three interior pages (the file header stays valid)."""
    pages = db.stat().st_size // 4096
    with db.open("r+b") as f:
        for page in (pages // 2, pages // 2 + 1, 2 * pages // 3):
            f.seek(page * 4096)
            f.write(b"\xff" * 64)
    return db.read_bytes()


def test_a_damaged_store_is_named_with_how_to_recover_and_not_written(run_cli, tmp_path,
                                                                     store):
    assert run_cli("epochs=300", "figures=false", f"tracking.uri={store}").returncode == 0
    db = Path(store[len("sqlite:///"):])
    before = damage(db)
    result = run_cli("epochs=2", f"tracking.uri={store}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{db} is damaged (SQLite's quick_check: " in result.stderr
    assert f"sqlite3 {db} .recover | sqlite3 {db.parent / 'recovered.db'}" in result.stderr
    assert "nothing was created" in result.stderr
    assert db.read_bytes() == before


def test_a_write_that_meets_a_damaged_page_names_the_store(tmp_path, monkeypatch):
    """Above FULL_CHECK_BYTES the open skips the metrics table's pages; SQLite reports a
    damaged page when a write reaches it, and the writer says the store is damaged."""
    import numpy as np

    from backprop_lab.tracking import sqlite_store
    from backprop_lab.tracking.store import SqliteBackend

    db = tmp_path / "mlflow.db"
    backend = SqliteBackend(f"sqlite:///{db}", sqlite_store.SqliteStore(db))
    experiment = backend.ensure_experiment("e", None)
    names = [f"m/{i:03d}" for i in range(200)]
    run_id = backend.create_run(experiment, "r", {}, {})
    backend.log_metrics(run_id, names, np.arange(500), np.ones((200, 500)),
                        np.arange(500) + 10**12)
    backend.flush()
    backend.store.close()
    con = sqlite3.connect(db)
    pages = [row[0] for row in con.execute(  # the pages of metrics' primary key (1-based)
        "SELECT pageno FROM dbstat WHERE name = 'sqlite_autoindex_metrics_1'")]
    con.close()
    with db.open("r+b") as f:
        for page in pages:
            f.seek((page - 1) * 4096)
            f.write(b"\xff" * 16)
    monkeypatch.setattr(sqlite_store, "FULL_CHECK_BYTES", 0)
    monkeypatch.delenv(sqlite_store.CHECKED_ENV, raising=False)
    backend = SqliteBackend(f"sqlite:///{db}", sqlite_store.SqliteStore(db))
    backend.log_metrics(run_id, names, np.arange(500, 600), np.ones((200, 100)),
                        np.arange(100) + 10**12)
    with pytest.raises(sqlite_store.DamagedStore, match="is damaged .* .recover"):
        backend.flush()


# -- the job's own record, and the restore command ----------------------------------------------
def test_after_a_full_disk_one_command_restores_every_epoch_once(run_cli, tmpfs, tmp_path,  # noqa: F811
                                                                client_for):
    folder = tmpfs("full", "1500k")
    db = folder / "s" / "mlflow.db"
    uri = f"sqlite:///{db}"
    result = run_cli("epochs=3000", "figures=false", f"tracking.uri={uri}")
    assert result.returncode == 1
    (run,) = runs_of(client_for(uri))
    run_id = run.info.run_id
    assert run.info.status == "FAILED" and "disk is full" in run.data.tags[REASON]
    assert f"restore later: python -m backprop_lab.tracking.restore {run_id}" in result.stderr
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(history) == 3001
    subprocess.run(["mount", "-o", "remount,size=100m", str(folder)], check=True)
    done = restore(uri, run_id)
    assert done.returncode == 0, done.stderr
    assert "values restored from" in done.stdout and "marked FINISHED (finished)" in done.stdout
    client = client_for(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[OUTCOME] == "finished"
    assert REASON not in run.data.tags
    for name in ("train/loss", "grad_norm/layer_01"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, name))
        assert steps == list(range(3001)), name
    # the log10 companions where the tracker sends them, and the run's summary from summary.json
    companion = list(np.flatnonzero(companion_rows(np.arange(3001), 3001, last=True)))
    steps = sorted(m.step for m in client.get_metric_history(
        run_id, "grad_weight_ratio_log10/layer_02"))
    assert steps == companion and len(companion) <= 2 * COMPANION_POINTS
    summary = {k for k in run.data.metrics if k.startswith("vanishing/")}
    assert {"vanishing/log10_ratio_init", "vanishing/log10_ratio_end"} <= summary
    companions = [k for k in run.data.metrics if is_log10_companion(k)]
    plain = len(run.data.metrics) - len(companions) - len(summary)
    stored = metric_rows(db, run_id)
    assert stored == 3001 * plain + len(companion) * len(companions) + len(summary)
    again = restore(uri, run_id)
    assert again.returncode == 0 and "no epoch missing from the store" in again.stdout
    assert metric_rows(db, run_id) == stored  # nothing stored twice


def test_after_kill_9_history_csv_holds_the_epochs_and_the_restore_puts_them_back(
        tmp_path, store, client_for):
    client = client_for(store)
    proc = start_train(tmp_path, store, "epochs=300000")
    (run,) = wait_for_metrics(proc, client)
    history = tmp_path / "run" / "history.csv"
    deadline = time.monotonic() + 60
    while (not history.exists() or len(history.read_text().splitlines()) < 1000) and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    stop(proc, signal.SIGKILL)
    run_id = run.info.run_id
    kept = pd.read_csv(history)
    assert len(kept) >= 1000 and list(kept["epoch"]) == list(range(len(kept)))
    db = Path(store[len("sqlite:///"):])
    before = {m.step for m in client.get_metric_history(run_id, "train/loss")}
    assert before <= set(kept["epoch"])
    done = restore(store, run_id)
    assert done.returncode == 0, done.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"  # as the orphan repair marks a vanished process
    assert "ended without closing the run" in run.data.tags[REASON]
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
    assert steps == list(kept["epoch"])
    stored = metric_rows(db, run_id)
    assert restore(store, run_id).returncode == 0
    assert metric_rows(db, run_id) == stored


def test_the_orphan_repair_offers_the_restore(tmp_path, store, client_for):
    client = client_for(store)
    proc = start_train(tmp_path, store, "epochs=300000")
    (run,) = wait_for_metrics(proc, client)
    stop(proc, signal.SIGKILL)
    repaired = subprocess.run([sys.executable, "-m", "backprop_lab.tracking.orphans", "--uri",
                               store, "--repair"], capture_output=True, text=True,
                              env=cli_env(), timeout=120)
    assert repaired.returncode == 0, repaired.stderr
    assert (f"its job kept its metrics in {tmp_path / 'run' / 'history.csv'}: python -m "
            f"backprop_lab.tracking.restore {run.info.run_id}") in repaired.stdout


# -- resuming a grid sweep ---------------------------------------------------------------------
SWEEP = ("-m", "seed=0,1,2,3", "epochs=4000", "progress=false", "figures=false")


def test_an_interrupted_sweep_resumes_with_each_job_finished_once_under_its_parent(
        tmp_path, store, client_for):
    client = client_for(store)
    proc = subprocess.Popen([sys.executable, str(TRAIN), *SWEEP, f"tracking.uri={store}",
                             f"hydra.sweep.dir={tmp_path / 'sweep1'}"], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        jobs = split_roles(runs_of(client))[1] if Path(store[10:]).exists() else []
        if sum(r.info.status == "FINISHED" for r in jobs) >= 1 and len(jobs) >= 2:
            break
        time.sleep(0.2)
    stop(proc, signal.SIGKILL)  # a pre-empted node: nothing ends its runs
    (parent,) = split_roles(runs_of(client))[0]
    finished = {r.data.tags["backprop_lab.job_key"] for r in split_roles(runs_of(client))[1]
                if r.info.status == "FINISHED"}
    assert 1 <= len(finished) < 4

    changed = subprocess.run(
        [sys.executable, str(TRAIN), "-m", "seed=0,1,2,4", *SWEEP[2:], f"tracking.uri={store}",
         "resume=true", f"hydra.sweep.dir={tmp_path / 'sweep-changed'}"], cwd=tmp_path,
        env=cli_env(), capture_output=True, text=True, timeout=300)
    assert changed.returncode == 1
    assert parent.info.run_name.startswith("epochs=4000 seed=0,1,2,3 ")  # name, time stamp
    assert (f"this is not the sweep {parent.info.run_name!r} (parent run {parent.info.run_id}): "
            "4 jobs then, 4 now; only in the earlier sweep: seed=3; only in this one: seed=4"
            ) in changed.stderr
    # The same sweep, its overrides in another order, resumed from the earlier sweep's folder.
    resumed = subprocess.run(
        [sys.executable, str(TRAIN), "-m", "epochs=4000", "seed=0,1,2,3", *SWEEP[3:],
         f"tracking.uri={store}", f"resume={tmp_path / 'sweep1'}",
         f"hydra.sweep.dir={tmp_path / 'sweep2'}"], cwd=tmp_path, env=cli_env(),
        capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert (f"Resuming sweep {parent.info.run_name!r} (parent run {parent.info.run_id}): "
            f"{len(finished)} of 4 jobs done earlier, {4 - len(finished)} to run"
            ) in resumed.stdout
    assert resumed.stdout.count("skipped (done earlier): ") == len(finished)
    parents, jobs = split_roles(runs_of(client))
    assert [p.info.run_id for p in parents] == [parent.info.run_id]
    assert parents[0].info.status == "FINISHED"
    done = [r.data.tags["backprop_lab.job_key"] for r in jobs if r.info.status == "FINISHED"]
    assert sorted(done) == sorted(set(done)) and len(done) == 4  # each job finished once
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in jobs)
    table = pd.read_csv(tmp_path / "sweep2" / "runs.csv")
    assert len(table) == 4 and set(table["outcome"]) == {"finished"}
    assert (table["skipped"] == "done earlier").sum() == len(finished)
