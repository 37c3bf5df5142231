"""Benchmark 3: what tracking costs end to end, and our writer against the database's floor.

Whole commands, as a user runs them, each variant measured side by side in this run,
interleaved, medians of the repeats, one BLAS thread:

1. the flagship ``python train.py -m activation=sigmoid,tanh,relu`` into a fresh SQLite store,
   against the same command with ``tracking=none`` (every metric, every epoch: 111,111 values);
2. that ``tracking=none`` command against ``python train.py --cfg job`` (start-up and Hydra's
   composition alone): what the harness costs around the engine;
3. ``-m experiment=vanishing_gradients`` (36 runs, every metric every epoch) tracked into a
   fresh store against ``tracking=none``;
4. per value: our SQLite writer (``SqliteStore.log_metrics`` on the tracker's blocks) against
   the floor, a raw ``sqlite3`` ``executemany`` of the same, ready-made rows into MLflow's
   ``metrics`` table; and MLflow's own ``MlflowClient.log_batch`` (1000 a call) for reference;
5. the flagship through the PostgreSQL-backed tracking server (scripts/tracking_server.py)
   against into SQLite (needs PostgreSQL's server programs and the cluster extra).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from backprop_lab.engine.history import LAYER_METRICS, LOG10_METRICS, SCALARS
from benchmarks.common import (
    REPO_ROOT,
    Row,
    Table,
    at_most,
    fmt_time,
    has_module,
    interleaved,
    median,
    subprocess_env,
)

TRAIN = str(REPO_ROOT / "train.py")
FLAGSHIP = ["-m", "activation=sigmoid,tanh,relu"]
# Values a flagship run logs per epoch: the scalars, every per-layer metric of its 3 weight
# layers, and the default log10 companions (conf/tracking/mlflow.yaml).
FLAGSHIP_METRICS = len(SCALARS) + 3 * (len(LAYER_METRICS) + len(LOG10_METRICS))
STUDY = ["-m", "experiment=vanishing_gradients"]
# The flagship with only grad_weight_ratio's companion: what the default companions cost.
ONE_LOG10 = "tracking.log10=[grad_weight_ratio]"
ONE_LOG10_METRICS = len(SCALARS) + 3 * (len(LAYER_METRICS) + 1)


class Commands:
    """Runs ``train.py`` variants in subprocesses, each into its own folders under ``root``."""

    def __init__(self, root: Path, threads: int) -> None:
        self.root = root
        self.env = subprocess_env(threads)
        self.count = 0

    def timed(self, args: list[str], store: str | None = None) -> float:
        """Wall seconds of ``python train.py ARGS`` (a fresh SQLite store unless ``store``)."""
        self.count += 1
        folder = self.root / f"c{self.count}"
        extra = [f"hydra.sweep.dir={folder / 'sweep'}", f"hydra.run.dir={folder / 'run'}"]
        if "--cfg" in args:
            extra = []
        elif "tracking=none" not in args:
            uri = store or f"sqlite:///{folder / 'mlflow.db'}"
            extra.append(f"tracking.uri={uri}")
        tic = time.perf_counter()
        done = subprocess.run([sys.executable, TRAIN, *args, *extra], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=3600)
        seconds = time.perf_counter() - tic
        if done.returncode != 0:
            raise RuntimeError(f"train.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        shutil.rmtree(folder, ignore_errors=True)
        return seconds


def _flagship_rows(table: Table, commands: Commands, repeats: int, quick: bool) -> None:
    size = ["epochs=20"] if quick else []
    times = interleaved({
        "cfg": lambda: commands.timed(["--cfg", "job"]),
        "none": lambda: commands.timed([*FLAGSHIP, *size, "tracking=none"]),
        "tracked": lambda: commands.timed([*FLAGSHIP, *size]),
        "one_log10": lambda: commands.timed([*FLAGSHIP, *size, ONE_LOG10]),
    }, repeats)
    cfg, none, tracked, one = (median(times[k])
                               for k in ("cfg", "none", "tracked", "one_log10"))
    epochs = 20 if quick else 1000
    table.add(Row(
        case=f"flagship tracked (fresh SQLite store) / tracking=none, {epochs} epochs",
        ratio=tracked / none, goal=at_most(1.3),
        cells={"tracked": fmt_time(tracked), "tracking=none": fmt_time(none),
               "values": f"{3 * FLAGSHIP_METRICS * (epochs + 1):,}"},
        values={"tracked_s": tracked, "none_s": none}))
    table.add(Row(
        case=f"the same with one log10 companion (`{ONE_LOG10}`, the previous default) / "
             "tracking=none",
        ratio=one / none, goal=at_most(1.3),
        cells={"tracked": fmt_time(one), "tracking=none": fmt_time(none),
               "values": f"{3 * ONE_LOG10_METRICS * (epochs + 1):,}"},
        values={"tracked_s": one, "none_s": none}))
    table.add(Row(
        case="flagship tracking=none / `train.py --cfg job`",
        ratio=none / cfg, goal=at_most(3.0),
        cells={"tracking=none": fmt_time(none), "--cfg job": fmt_time(cfg)},
        values={"none_s": none, "cfg_s": cfg}))


def _study_row(table: Table, commands: Commands, repeats: int, quick: bool) -> None:
    size = ["epochs=5", "model.depth=2,5", "seed=0"] if quick else []
    times = interleaved({
        "none": lambda: commands.timed([*STUDY, *size, "tracking=none"]),
        "tracked": lambda: commands.timed([*STUDY, *size]),
    }, repeats, warmup=0)
    none, tracked = median(times["none"]), median(times["tracked"])
    table.add(Row(
        case="vanishing_gradients study (log_every 1) tracked / tracking=none"
             + (" (quick: shrunk)" if quick else ", 36 runs"),
        ratio=tracked / none, goal=at_most(1.3),
        cells={"tracked": fmt_time(tracked), "tracking=none": fmt_time(none)},
        values={"tracked_s": tracked, "none_s": none}))


def _blocks(n_metrics: int, rows: int, block_rows: int, seed: int = 0):
    """(names, steps, values, timestamps) blocks as the tracker writes them."""
    rng = np.random.default_rng(seed)
    names = [f"metric_{i}/layer_{i % 7}" for i in range(n_metrics)]
    values = rng.normal(size=(n_metrics, rows))
    stamps = 1_800_000_000_000 + np.arange(rows, dtype=np.int64)
    for start in range(0, rows, block_rows):
        steps = np.arange(start, min(rows, start + block_rows))
        yield names, steps, values[:, steps], stamps[steps]


def _writer_rows(table: Table, tmp: Path, repeats: int, quick: bool) -> None:
    from backprop_lab.tracking.run_tracker import BLOCK_VALUES
    from backprop_lab.tracking.sqlite_store import SqliteStore

    n_metrics, rows, runs = FLAGSHIP_METRICS, (201 if quick else 1001), 3
    block_rows = BLOCK_VALUES // n_metrics
    n_values = n_metrics * rows * runs
    count = [0]

    def fresh() -> tuple[SqliteStore, list[str]]:
        """A new store and ``runs`` new runs in it."""
        count[0] += 1
        store = SqliteStore(tmp / f"w{count[0]}" / "mlflow.db")
        experiment_id = store.ensure_experiment("bench", None)
        location = store.artifact_location(experiment_id)
        run_ids = [uuid.uuid4().hex for _ in range(runs)]
        for i, run_id in enumerate(run_ids):
            store.create_run(run_id, experiment_id, f"r{i}",
                             store.artifact_uri(location, run_id), {}, {})
        return store, run_ids

    def ours() -> float:
        store, run_ids = fresh()
        tic = time.perf_counter()
        for i, run_id in enumerate(run_ids):
            for block in _blocks(n_metrics, rows, block_rows, seed=i):
                store.log_metrics(run_id, *block)
        seconds = time.perf_counter() - tic
        store.close()
        return seconds

    def raw() -> float:
        store, run_ids = fresh()
        prepared = [
            list(chain.from_iterable(
                zip(repeat(name), row, stamps.tolist(), repeat(run_id), steps.tolist(),
                    repeat(False))
                for name, row in zip(names, values.tolist())))
            for i, run_id in enumerate(run_ids)
            for names, steps, values, stamps in _blocks(n_metrics, rows, block_rows, seed=i)
        ]
        con = sqlite3.connect(store.path, isolation_level=None)
        tic = time.perf_counter()
        for batch in prepared:
            con.execute("BEGIN")
            con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)"
                            " VALUES (?, ?, ?, ?, ?, ?)", batch)
            con.execute("COMMIT")
        seconds = time.perf_counter() - tic
        con.close()
        store.close()
        return seconds

    def mlflow_log_batch() -> float:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        store, run_ids = fresh()
        client = MlflowClient(f"sqlite:///{store.path}")
        tic = time.perf_counter()
        for i, run_id in enumerate(run_ids):
            for names, steps, values, stamps in _blocks(n_metrics, rows, 1000 // n_metrics,
                                                        seed=i):
                client.log_batch(run_id, metrics=[
                    Metric(name, v, t, s) for name, row in zip(names, values.tolist())
                    for v, t, s in zip(row, stamps.tolist(), steps.tolist())])
        seconds = time.perf_counter() - tic
        store.close()
        return seconds

    variants = {"ours": ours, "raw": raw}
    if has_module("mlflow"):
        variants["mlflow"] = mlflow_log_batch
    times = interleaved(variants, repeats)
    per = {k: median(v) / n_values for k, v in times.items()}
    table.add(Row(
        case=f"per value: our writer / raw sqlite3 executemany ({n_values:,} values, "
             f"blocks of {block_rows} rows x {n_metrics} metrics)",
        ratio=per["ours"] / per["raw"], goal=at_most(5.0),
        cells={"ours": f"{per['ours'] * 1e6:.2f} us", "floor": f"{per['raw'] * 1e6:.2f} us"},
        values={"ours_us": per["ours"] * 1e6, "raw_us": per["raw"] * 1e6}))
    if "mlflow" in per:
        table.add(Row(
            case="per value: MlflowClient.log_batch (1000 a call) / raw sqlite3 executemany",
            ratio=per["mlflow"] / per["raw"],
            cells={"mlflow": f"{per['mlflow'] * 1e6:.1f} us",
                   "floor": f"{per['raw'] * 1e6:.2f} us"},
            values={"mlflow_us": per["mlflow"] * 1e6}))


def _server_row(table: Table, commands: Commands, tmp: Path, repeats: int, quick: bool) -> None:
    from backprop_lab.tracking import server

    try:
        server.find_pg_bin()
        import psycopg2  # noqa: F401
    except (server.ServerError, ImportError) as exc:
        table.notes.append(f"Server row skipped: {exc}")
        return
    folder = tmp / "server"
    folder.mkdir()
    for path in (tmp, folder):  # PostgreSQL runs as user postgres: it must reach its folder
        path.chmod(0o755)
    try:
        state = server.start(folder, port=server.free_port())
    except server.ServerError as exc:
        table.notes.append(f"Server row skipped: the server did not start ({exc}).")
        return
    try:
        size = ["epochs=20"] if quick else []
        times = interleaved({
            "sqlite": lambda: commands.timed([*FLAGSHIP, *size]),
            "server": lambda: commands.timed([*FLAGSHIP, *size], store=state.uri),
        }, repeats)
    finally:
        server.stop(folder)
    sqlite_s, server_s = median(times["sqlite"]), median(times["server"])
    table.add(Row(
        case="flagship through the PostgreSQL-backed server / into SQLite",
        ratio=server_s / sqlite_s, goal=at_most(1.5),
        cells={"server": fmt_time(server_s), "sqlite": fmt_time(sqlite_s)},
        values={"server_s": server_s, "sqlite_s": sqlite_s}))


def run(quick: bool = False, threads: int = 1) -> Table:
    table = Table(
        key="tracking",
        title="3. Tracking end to end",
        what=__doc__.split("\n\n", 1)[1].strip(),
        ratio_label="ratio",
    )
    repeats = 1 if quick else 5
    tmp = Path(tempfile.mkdtemp(prefix="backprop-bench-tracking-"))
    try:
        commands = Commands(tmp, threads)
        _flagship_rows(table, commands, repeats, quick)
        _writer_rows(table, tmp, 1 if quick else 3, quick)
        _study_row(table, commands, 1 if quick else 2, quick)
        if quick:  # starting PostgreSQL takes longer than the rest of a quick run
            table.notes.append("Server row: not run with --quick.")
        else:
            _server_row(table, commands, tmp, 3, quick)
        table.notes.append(f"Whole commands: {repeats} interleaved repeats (the study: "
                           f"{1 if quick else 2}), medians; wall time.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return table
