"""The direct SQLite writer against MLflow itself: the schema it creates is the one MLflow's
migrations make, and the rows it writes are the rows ``MlflowClient.log_batch`` writes for the
same values (NaN, +/-inf, repeated and out-of-order steps included), read back through MLflow's
client. Plus concurrent creation of one new store by several processes."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from backprop_lab import tracking
from backprop_lab.tracking.mlflow_backend import MlflowBackend
from backprop_lab.tracking.sqlite_store import (
    SchemaMismatch,
    SqliteStore,
    schema_revision,
)
from backprop_lab.tracking.store import SqliteBackend, open_store


def schema_signature(db: Path) -> dict:
    """Everything that defines a SQLite schema, independent of the order in which migrations
    wrote columns' constraints and indexes: per table its columns, its constraint clauses, its
    indexes and foreign keys; plus the rows of alembic_version and workspaces."""
    con = sqlite3.connect(db)
    found: dict = {}
    tables = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"
                         " AND name NOT LIKE 'sqlite_%'").fetchall()
    for name, sql in tables:
        indexes = {
            (row[1], row[2], tuple(c[2] for c in con.execute(f"PRAGMA index_info('{row[1]}')")))
            for row in con.execute(f"PRAGMA index_list('{name}')")
        }
        found[name] = (
            con.execute(f"PRAGMA table_info('{name}')").fetchall(),
            sorted(line.strip().rstrip(",") for line in sql.splitlines()[1:]),
            sorted(indexes),
            sorted(con.execute(f"PRAGMA foreign_key_list('{name}')").fetchall()),
        )
    found["rows"] = (con.execute("SELECT * FROM alembic_version").fetchall(),
                     con.execute("SELECT * FROM workspaces").fetchall())
    con.close()
    return found


def test_schema_file_is_what_mlflows_migrations_make(tmp_path) -> None:
    theirs, ours = tmp_path / "theirs.db", tmp_path / "ours.db"
    MlflowClient(f"sqlite:///{theirs}").search_experiments()  # MLflow creates and migrates it
    SqliteStore(ours).close()
    assert schema_signature(ours) == schema_signature(theirs), (
        "MLflow's schema changed: python -m backprop_lab.tracking.sqlite_store --write-schema")


def test_a_store_we_create_opens_in_mlflow_without_migrating(tmp_path) -> None:
    db = tmp_path / "sub" / "mlflow.db"
    store = SqliteStore(db)
    assert store.created
    client = MlflowClient(f"sqlite:///{db}")
    default = client.get_experiment("0")
    assert default.name == "Default" and default.lifecycle_stage == "active"
    version = sqlite3.connect(db).execute("SELECT version_num FROM alembic_version").fetchall()
    assert version == [(schema_revision(),)]  # MLflow found nothing to migrate
    assert not SqliteStore(db).created  # a second open uses the same file


def test_open_store_picks_the_direct_writer_only_for_our_schema(tmp_path) -> None:
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'a.db'}"), SqliteBackend)
    odd = tmp_path / "odd.db"
    con = sqlite3.connect(odd)
    con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
    con.execute("INSERT INTO alembic_version VALUES ('0123456789ab')")
    con.commit()
    with pytest.raises(SchemaMismatch, match="0123456789ab"):
        SqliteStore(odd)


# Values as MLflow must keep them: NaN (is_nan), +/-inf (clamped), tiny and huge numbers.
SPECIAL = [0.5, math.nan, math.inf, -math.inf, 1e-300, -2.5, 1e308, 0.0]
NAMES = ["train/loss", "grad_norm/layer_1", "grad_norm/layer_10"]
# Three blocks (steps, values (3, n), timestamps): steps 0-7, steps 8-15 with the special
# values, then steps that go back (3, 1) with later timestamps and a repeated step 15.
BLOCKS = [
    (np.arange(8), np.random.default_rng(0).normal(size=(3, 8)), 1_000 + np.arange(8)),
    (np.arange(8, 16), np.array([SPECIAL, SPECIAL[::-1], SPECIAL[2:] + SPECIAL[:2]]),
     2_000 + np.arange(8)),
    (np.array([3, 1, 15]), np.array([[1.0, 2.0, 3.0], [4.0, 5.0, math.nan], [6, 7, 1e9]]),
     np.array([5_000, 5_001, 2_007])),
]


def log_batch_blocks(client: MlflowClient, run_id: str) -> None:
    """BLOCKS through MLflow's own ``log_batch``: the reference."""
    for steps, values, times in BLOCKS:
        client.log_batch(run_id, metrics=[
            Metric(name, float(v), int(t), int(s))
            for name, row in zip(NAMES, values) for v, t, s in zip(row, times, steps)])


def assert_same_histories(client: MlflowClient, ours: str, theirs: str) -> None:
    """Every metric's history and latest value, read through MLflow's client, are equal."""
    for name in NAMES:
        mine = [(m.step, m.timestamp, m.value) for m in client.get_metric_history(ours, name)]
        want = [(m.step, m.timestamp, m.value) for m in client.get_metric_history(theirs, name)]
        assert len(mine) == 19 and np.array_equal(np.array(mine), np.array(want),
                                                   equal_nan=True), name
    assert np.array_equal(
        [client.get_run(ours).data.metrics[n] for n in NAMES],
        [client.get_run(theirs).data.metrics[n] for n in NAMES], equal_nan=True)


def test_rows_equal_what_mlflow_log_batch_writes(tmp_path, rows_of) -> None:
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    experiment_id = tracking.ensure_experiment(uri, "equal")
    ours = tracking.create_run(uri, experiment_id, "ours", params={"lr": 0.5}, tags={"t": "1"})
    client = MlflowClient(uri)
    theirs = client.create_run(experiment_id, run_name="theirs").info.run_id
    backend = open_store(uri)
    for steps, values, times in BLOCKS:
        backend.log_metrics(ours, NAMES, steps, values, times)
    backend.flush()  # blocks are written by the backend's writer thread
    log_batch_blocks(client, theirs)
    for table in ("metrics", "latest_metrics"):
        assert rows_of(db, table, ours) == rows_of(db, table, theirs), table
    assert_same_histories(client, ours, theirs)
    # Writing a block again (an interrupted flush repeated) adds nothing.
    backend.log_metrics(ours, NAMES, *BLOCKS[0])
    backend.flush()
    assert rows_of(db, "metrics", ours) == rows_of(db, "metrics", theirs)


def test_runs_params_tags_and_end_as_mlflow_reads_them(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = tracking.ensure_experiment(uri, "runs")
    assert tracking.ensure_experiment(uri, "runs") == experiment_id
    parent = tracking.create_run(uri, experiment_id, "sweep", tags={"role": "sweep"})
    child = tracking.create_run(uri, experiment_id, "child", params={"a.b": 1, "long": "x" * 7000},
                                tags={"role": "job"}, parent_run_id=parent)
    local = tmp_path / "out"
    (local / "figures").mkdir(parents=True)
    (local / "history.csv").write_text("epoch,train/loss\n0,1\n")
    (local / "figures" / "curves.png").write_bytes(b"png")
    backend = open_store(uri)
    backend.log_artifacts(child, [tracking.ArtifactSpec(local / "history.csv"),
                                  tracking.ArtifactSpec(local / "figures", "figures"),
                                  tracking.ArtifactSpec(local / "missing.npz")])
    tracking.end_run(uri, child, "diverged", "loss not finite at epoch 3", {"extra": "1"})
    client = MlflowClient(uri)
    run = client.get_run(child)
    assert run.info.run_name == "child" and run.info.status == "FAILED"
    assert run.info.end_time >= run.info.start_time > 0
    assert run.data.params == {"a.b": "1", "long": "x" * 6000}
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["mlflow.runName"] == "child"
    assert run.data.tags["backprop_lab.outcome"] == "diverged"
    assert run.data.tags["backprop_lab.failure_reason"] == "loss not finite at epoch 3"
    assert run.data.tags["extra"] == "1"
    assert run.info.artifact_uri == (tmp_path / "mlartifacts" / child / "artifacts").as_uri()
    assert sorted(a.path for a in client.list_artifacts(child)) == ["figures", "history.csv"]
    assert [a.path for a in client.list_artifacts(child, "figures")] == ["figures/curves.png"]
    got = Path(client.download_artifacts(child, "history.csv", str(tmp_path)))
    assert got.read_text() == "epoch,train/loss\n0,1\n"
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert [r.info.run_id for r in children] == [child]
    assert client.get_run(parent).info.status == "RUNNING"


def test_the_mlflow_backend_writes_the_same_histories(tmp_path, rows_of) -> None:
    """The fallback (MLflow's client) stores the same blocks the same way."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = tracking.ensure_experiment(uri, "fallback")
    fast, slow = open_store(uri), MlflowBackend(uri)
    names = ["a", "b"]
    steps, values, times = np.arange(4), np.array([SPECIAL[:4], SPECIAL[4:]]), np.arange(4) + 9
    runs = []
    for backend in (fast, slow):
        run_id = backend.create_run(experiment_id, "r", {}, {})
        backend.log_metrics(run_id, names, steps, values, times)
        backend.flush()
        runs.append(run_id)
    db = tmp_path / "mlflow.db"
    assert rows_of(db, "metrics", runs[0]) == rows_of(db, "metrics", runs[1])
    assert rows_of(db, "latest_metrics", runs[0]) == rows_of(db, "latest_metrics", runs[1])


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path) -> None:
    """Four processes open the same store that does not exist yet, at the same moment (a
    barrier file), each creating a run and writing a block; every one succeeds and every run is
    complete."""
    db = tmp_path / "new" / "mlflow.db"
    script = textwrap.dedent(f"""
        import os, sys, time
        import numpy as np
        from backprop_lab import tracking
        go = {str(tmp_path / 'go')!r}
        while not os.path.exists(go):
            time.sleep(0.001)
        uri = "sqlite:///{db}"
        exp = tracking.ensure_experiment(uri, "race")
        run = tracking.create_run(uri, exp, "p" + sys.argv[1])
        tracking.open_store(uri).log_metrics(run, ["m"], np.arange(50), np.ones((1, 50)),
                                             np.arange(50))
        tracking.end_run(uri, run, "finished")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stderr=subprocess.PIPE,
                              text=True) for i in range(4)]
    (tmp_path / "go").touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("race")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["p0", "p1", "p2", "p3"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(len(client.get_metric_history(r.info.run_id, "m")) == 50 for r in runs)
    assert list(db.parent.glob(".*.tmp")) == []  # no temporary schema file left behind
