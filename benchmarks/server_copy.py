"""The tracking server's bulk metric path (COPY) as the cluster's owner and as its own user.

    python benchmarks/server_copy.py                # needs PostgreSQL's server programs
    python benchmarks/server_copy.py --blocks 10 --repeats 3

Starts a PostgreSQL cluster in a temporary folder exactly as scripts/tracking_server.py does
(tracking/server.py: the owner ``mlflow``, the server's user ``mlflow_app``), then writes the
flagship's metric blocks (37 metrics x 221 steps) with ``BulkMetricsSqlAlchemyStore.
log_metric_block`` as

- ``owner``: the cluster's owner, a superuser (what the server connected as before);
- ``mlflow_app``: the server's user now (owner of the database, SET on
  session_replication_role: the foreign key's per-row check skipped as before);
- ``no SET grant``: a user with the same table rights but without that grant (the foreign
  key checked row by row: what a PostgreSQL older than 15 gives the server's user).

Each repeat writes ``--blocks`` blocks per variant into new runs, variants interleaved;
reports medians in microseconds a value. The machine is shared: figures vary with its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402

from backprop_lab.tracking import server as srv  # noqa: E402

N_METRICS, N_STEPS = 37, 221


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=None, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    import psycopg2

    from backprop_lab.tracking.server_store import BulkMetricsSqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="backprop-lab-copy-"))
    folder.chmod(0o755)
    state = srv.ServerState(dir=str(folder / "server"), pg_port=srv.free_port(),
                            pg_bin=str(srv.find_pg_bin()))
    old = os.umask(srv.PRIVATE)
    try:
        srv.make_private(state.root)
        srv.start_postgres(state, srv._password(state))
    finally:
        os.umask(old)
    try:
        base = f"127.0.0.1:{state.pg_port}/{srv.DB_NAME}"
        app_uri = f"postgresql+psycopg2://{srv.APP_USER}:{srv.app_password(state)}@{base}"
        app = BulkMetricsSqlAlchemyStore(app_uri, str(folder / "a"))  # makes MLflow's tables
        con = psycopg2.connect(srv.owner_uri(state).replace("+psycopg2", ""))
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("DROP ROLE IF EXISTS no_set_grant")
            cur.execute("CREATE ROLE no_set_grant LOGIN PASSWORD 'bench'")
            cur.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO no_set_grant")
            cur.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {srv.DB_NAME} TO no_set_grant")
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (srv.APP_USER,))
            app_super = cur.fetchone()[0]
        con.close()
        stores = {
            "owner": BulkMetricsSqlAlchemyStore(srv.owner_uri(state), str(folder / "a")),
            "mlflow_app": app,
            "no SET grant": BulkMetricsSqlAlchemyStore(
                f"postgresql+psycopg2://no_set_grant:bench@{base}", str(folder / "a")),
        }
        experiment = app.create_experiment("copy-bench")
        rng = np.random.default_rng(0)
        names = [f"grad_norm/layer_{i:02d}" for i in range(N_METRICS)]
        steps = list(range(N_STEPS))
        times = [1_700_000_000_000 + s for s in steps]
        values = rng.random((N_METRICS, N_STEPS)).tolist()
        per_value: dict[str, list[float]] = {name: [] for name in stores}
        skip: dict[str, bool] = {}
        order = list(stores)
        for repeat in range(args.repeats):
            for name in order if repeat % 2 == 0 else order[::-1]:
                store = stores[name]
                run_ids = [app.create_run(experiment, "u", 0, [], f"{name}-{repeat}-{b}")
                           .info.run_id for b in range(args.blocks)]
                tic = time.perf_counter()
                for run_id in run_ids:
                    store.log_metric_block(run_id, names, steps, times, values)
                seconds = time.perf_counter() - tic
                per_value[name].append(seconds / (args.blocks * N_METRICS * N_STEPS) * 1e6)
                skip[name] = bool(store._skip_fk)
        lines = [f"{args.blocks} blocks of {N_METRICS} x {N_STEPS} values per variant and "
                 f"repeat; medians of {args.repeats} interleaved repeats; mlflow_app is a "
                 f"superuser: {app_super}; shared 2-core machine (load "
                 f"{os.getloadavg()[0]:.1f}).", "",
                 "| database user | foreign key check skipped | us a value | vs owner |",
                 "|---|---|---|---|"]
        owner = statistics.median(per_value["owner"])
        for name in stores:
            med = statistics.median(per_value[name])
            lines.append(f"| {name} | {skip[name]} | {med:.2f} | {med / owner:.2f} |")
        text = "\n".join(lines)
        print(text)
        if args.output:
            Path(args.output).write_text(text + "\n")
    finally:
        srv.stop_postgres(state)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
