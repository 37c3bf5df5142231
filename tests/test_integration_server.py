"""The shared tracking server, for real: ``scripts/tracking_server.py`` starts PostgreSQL and
``mlflow server`` on 127.0.0.1, MLflow's client logs to it (a hand-made run, then an 8-job
joblib sweep, 8 writers at once), stop/start keeps every run, and a sweep against a server that
is not running fails fast, with a clear message and nothing created.

Run with ``pytest -m integration``; needs PostgreSQL's server programs (apt-get install
postgresql) and the cluster extra (psycopg2-binary). As root, PostgreSQL runs as user postgres,
so the server's folder is made under /tmp with mode 755 (pytest's own tmp folders are 700).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_integration_sweeps import (
    EPOCHS,
    N_JOBS,
    SWEEP,
    check_sweep,
    non_loopback_listeners,
    private_env,
    process_tree,
    run_train,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "tracking_server.py"


def server_script(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=private_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def server():
    """A server started by the project's script in a new folder; stopped (and removed) after."""
    from backprop_lab.tracking.server import free_port

    folder = Path(tempfile.mkdtemp(prefix="backprop-lab-server-"))
    folder.chmod(0o755)
    home = folder / "server"
    port = free_port()
    tic = time.perf_counter()
    started = server_script("start", "--dir", str(home), "--port", str(port))
    assert started.returncode == 0, started.stdout + started.stderr
    info = {"dir": home, "uri": f"http://127.0.0.1:{port}", "port": port,
            "start_seconds": time.perf_counter() - tic, "stdout": started.stdout}
    try:
        yield info
    finally:
        server_script("stop", "--dir", str(home))
        shutil.rmtree(folder, ignore_errors=True)


def state_of(home: Path) -> dict:
    return json.loads((home / "server.json").read_text())


def postmaster_pid(home: Path) -> int:
    return int((home / "pg" / "data" / "postmaster.pid").read_text().split()[0])


def test_server_runs_on_loopback_and_keeps_runs_and_artifacts(server, tmp_path):
    """The script prints how to use the server; both servers listen on 127.0.0.1 only; a run
    logged with MLflow's client comes back whole, its artifact served over HTTP."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    assert f"tracking.uri={server['uri']}" in server["stdout"]
    status = server_script("status", "--dir", str(server["dir"]))
    assert status.returncode == 0 and json.loads(status.stdout)["running"], status.stdout
    state = state_of(server["dir"])
    assert state["host"] == "127.0.0.1" and state["port"] == server["port"]
    pids = process_tree(state["pid"]) | process_tree(postmaster_pid(server["dir"]))
    assert len(pids) >= 2 and not non_loopback_listeners(pids)
    assert "password" not in (server["dir"] / "server.json").read_text()
    assert (server["dir"] / "credentials").stat().st_mode & 0o077 == 0

    client = MlflowClient(tracking_uri=server["uri"])
    experiment = client.create_experiment("hand-made")
    parent = client.create_run(experiment, run_name="parent").info.run_id
    child = client.create_run(experiment, run_name="child",
                              tags={"mlflow.parentRunId": parent}).info.run_id
    n = 2500  # three log_batch calls of at most 1000
    values = [Metric(f"m{k}", float(step) / (k + 1), 0, step) for k in range(5)
              for step in range(n // 5)]
    for start in range(0, n, 1000):
        client.log_batch(child, metrics=values[start:start + 1000], synchronous=True)
    note = tmp_path / "note.txt"
    note.write_text("backprop-lab\n")
    client.log_artifact(child, str(note), "notes")
    client.set_terminated(child)
    client.set_terminated(parent)

    run = client.get_run(child)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    for k in range(5):
        history = client.get_metric_history(child, f"m{k}")
        assert sorted(m.step for m in history) == list(range(n // 5))
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    local = client.download_artifacts(child, "notes/note.txt", str(tmp_path / "down"))
    assert Path(local).read_text() == "backprop-lab\n"
    # Stored in the server's artifact folder, not beside the client.
    assert list((server["dir"] / "artifacts").rglob("note.txt"))


def test_joblib_sweep_into_server(server, tmp_path):
    """8 jobs at once through joblib into the PostgreSQL-backed server: one parent, 8 children,
    every metric value, artifacts downloadable over HTTP; the experiment created once."""
    result, seconds = run_train(
        "-m", *SWEEP, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={N_JOBS}",
        f"tracking.uri={server['uri']}", "tracking.experiment=sweep-on-server",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    check_sweep(server["uri"], N_JOBS, EPOCHS, tmp_path / "downloads",
                experiment="sweep-on-server")
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_sweep_against_a_server_that_is_not_running_fails_fast(tmp_path):
    """Nothing listens on the port: the sweep stops before any job, within seconds (MLflow's
    own retries would take about 4 minutes), naming the server; no run folder, no store."""
    from backprop_lab.tracking.server import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    tic = time.perf_counter()
    result, _ = run_train("-m", *SWEEP, f"tracking.uri={uri}",
                          f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=45)
    seconds = time.perf_counter() - tic
    assert result.returncode != 0
    assert seconds < 40, f"took {seconds:.0f} s to give up"
    assert uri in result.stderr and "not reachable" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "sweep").glob("*/summary.json"))
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / "mlruns").exists()


def test_check_tracking_server(server):
    from backprop_lab.tracking.server import ServerError, check_tracking_server, free_port

    check_tracking_server(server["uri"])
    check_tracking_server("sqlite:////nowhere/mlflow.db")  # not a server: not checked
    with pytest.raises(ServerError, match="not reachable"):
        check_tracking_server(f"http://127.0.0.1:{free_port()}", timeout=2)


def test_stop_then_start_keeps_every_run(server):
    """Runs after the previous tests; stopping frees both ports, starting again finds the
    same database and artifacts (and the same PostgreSQL port)."""
    from mlflow.tracking import MlflowClient

    from backprop_lab.tracking.server import _port_free

    before = state_of(server["dir"])
    stopped = server_script("stop", "--dir", str(server["dir"]))
    assert stopped.returncode == 0 and "PostgreSQL" in stopped.stdout, stopped.stdout
    assert _port_free("127.0.0.1", server["port"]) and _port_free("127.0.0.1", before["pg_port"])
    status = server_script("status", "--dir", str(server["dir"]))
    assert status.returncode == 3 and not json.loads(status.stdout)["running"]

    started = server_script("start", "--dir", str(server["dir"]), "--port", str(server["port"]))
    assert started.returncode == 0, started.stdout + started.stderr
    assert state_of(server["dir"])["pg_port"] == before["pg_port"]
    client = MlflowClient(tracking_uri=server["uri"])
    names = {e.name for e in client.search_experiments()}
    assert {"hand-made", "sweep-on-server"} <= names
    experiment = client.get_experiment_by_name("hand-made").experiment_id
    runs = client.search_runs([experiment])
    assert {r.info.run_name for r in runs} == {"parent", "child"}


def test_blocks_through_the_server_equal_log_batch_on_postgresql(server):
    """The client's metric blocks (the server's block route, the bulk store on PostgreSQL) are
    stored exactly as MLflow's own log_batch through the same server stores them."""
    from mlflow.tracking import MlflowClient

    from backprop_lab.tracking.rest_store import RestBackend
    from backprop_lab.tracking.store import open_store
    from tests.test_tracking_store import BLOCKS, NAMES, assert_same_histories, log_batch_blocks

    client = MlflowClient(server["uri"])
    experiment_id = client.create_experiment("blocks-vs-log-batch")
    backend = open_store(server["uri"])
    assert isinstance(backend, RestBackend)  # plain http://: no MLflow client in the job
    ours = backend.create_run(experiment_id, "blocks", {}, {})
    for steps, values, times in BLOCKS:
        backend.log_metrics(ours, NAMES, steps, values, times)
    backend.flush()
    assert backend._fallback is None  # the server took blocks (no fallback to log-batch)
    theirs = client.create_run(experiment_id, run_name="log-batch").info.run_id
    log_batch_blocks(client, theirs)
    assert_same_histories(client, ours, theirs)
    # A block sent again (a retry after a lost answer) is stored once: COPY meets the primary
    # key, and the store moves the block through its staging table, skipping rows it holds.
    for steps, values, times in BLOCKS:
        backend.log_metrics(ours, NAMES, steps, values, times)
    backend.flush()
    assert_same_histories(client, ours, theirs)


def test_blocks_of_a_database_user_without_the_owners_rights(server, tmp_path):
    """A team's PostgreSQL user that may not set session_replication_role writes blocks with the
    foreign key checked row by row, and stores what the cluster owner's blocks store."""
    import psycopg2
    from mlflow.tracking import MlflowClient

    from backprop_lab.tracking import server as srv
    from backprop_lab.tracking.server_store import BulkMetricsSqlAlchemyStore
    from tests.test_tracking_store import BLOCKS, NAMES, assert_same_histories

    state = srv.ServerState.load(server["dir"])
    owner = srv.owner_uri(state)
    con = psycopg2.connect(owner.replace("postgresql+psycopg2://", "postgresql://"))
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS plain_writer")
        cur.execute("CREATE ROLE plain_writer LOGIN PASSWORD 'plain'")
        cur.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO plain_writer")
        # The database is private to its owner (server.py): other users are let in by name.
        cur.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {srv.DB_NAME} TO plain_writer")
    con.close()
    plain_uri = (f"postgresql+psycopg2://plain_writer:plain@127.0.0.1:{state.pg_port}/"
                 f"{srv.DB_NAME}")
    plain = BulkMetricsSqlAlchemyStore(plain_uri, str(tmp_path / "a"))
    ours = BulkMetricsSqlAlchemyStore(owner, str(tmp_path / "a"))
    experiment_id = ours.create_experiment("plain-user-blocks")
    runs = {name: ours.create_run(experiment_id, "u", 0, [], name).info.run_id
            for name in ("owner", "plain")}
    for store, run_id in ((ours, runs["owner"]), (plain, runs["plain"])):
        for steps, values, times in BLOCKS:
            store.log_metric_block(run_id, NAMES, steps.tolist(), times.tolist(),
                                   values.tolist())
    assert ours._skip_fk is True and plain._skip_fk is False
    client = MlflowClient(server["uri"])
    assert_same_histories(client, runs["plain"], runs["owner"])
    with pytest.raises(Exception, match="not found|does not exist"):
        plain.log_metric_block("0" * 32, NAMES[:1], [0], [1], [[1.0]])


def test_the_server_keeps_its_secrets_private_and_its_user_has_only_its_rights(server):
    """Issue 19: umask 077 for the folder, logs and credentials; no password in MLflow's
    start-up lines, the process list or the backend URI; the MLflow server's database user
    owns its database only, may set session_replication_role (the bulk path's fast lane)."""
    import os
    import stat

    import psycopg2

    from backprop_lab.tracking import server as srv

    home = server["dir"]
    state = srv.ServerState.load(home)
    mode = {p: stat.S_IMODE((home / p).stat().st_mode)
            for p in (".", "logs", "artifacts", "logs/server.log", "credentials", "pgpass",
                      "server.json")}
    assert mode["."] in (0o700, 0o711)
    assert all(m & 0o077 == 0 for p, m in mode.items() if p != "."), mode
    owner_pw, app_pw = srv._password(state), srv.app_password(state)
    for log in (state.server_log, state.pg_log):
        text = log.read_text(errors="replace")
        assert owner_pw not in text and app_pw not in text
    assert "mlflow_app@127.0.0.1" in state.server_log.read_text()  # the URI MLflow prints
    for pid in process_tree(state.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert owner_pw.encode() not in cmdline and app_pw.encode() not in cmdline
    con = psycopg2.connect(srv.owner_uri(state).replace("+psycopg2", ""))
    try:
        with con.cursor() as cur:
            cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles"
                        " WHERE rolname = %s", (srv.APP_USER,))
            assert cur.fetchone() == (False, False, False)
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                        (srv.DB_NAME,))
            assert cur.fetchone()[0] == srv.APP_USER
            cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                        " AND tableowner <> %s", (srv.APP_USER,))
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT has_database_privilege(%s, 'postgres', 'CONNECT')",
                        (srv.APP_USER,))
            assert cur.fetchone()[0] is False
    finally:
        con.close()
    app = psycopg2.connect(host="127.0.0.1", port=state.pg_port, dbname=srv.DB_NAME,
                           user=srv.APP_USER, password=app_pw)
    try:
        with app.cursor() as cur:
            from backprop_lab.tracking.server_store import BulkMetricsSqlAlchemyStore

            store = BulkMetricsSqlAlchemyStore.__new__(BulkMetricsSqlAlchemyStore)
            assert store._can_skip_fk_checks(cur) is True
            with pytest.raises(psycopg2.Error):
                cur.execute("CREATE DATABASE another")
    finally:
        app.close()
    assert os.environ.get("PGPASSWORD") is None
