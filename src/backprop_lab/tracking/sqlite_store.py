"""MLflow's SQLite store, written with the standard library's ``sqlite3``.

The rows are the ones MLflow's own ``SqlAlchemyStore`` writes (same tables, same columns, same
encodings), so MLflow's client, ``mlflow ui`` and ``search_runs`` read them as their own:

- ``metrics``: one row per (key, step) with ``is_nan``; NaN is stored as value 0 with
  ``is_nan = 1`` and +/-inf as +/-1.797e308 (``sys.float_info.max``), as MLflow does.
- ``latest_metrics``: per (run, key) the row with the greatest (step, timestamp, value), kept by
  one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` per key and batch.
- ``runs``, ``tags`` (``mlflow.runName`` included), ``params``, ``experiments``.
- artifacts of a local (``file:``) artifact location are copied into
  ``<artifact_uri>/<artifact_path>/`` as MLflow's LocalArtifactRepository does.

Why: MLflow's ``log_batch`` builds ORM objects for every value and queries ``latest_metrics`` key
by key, which costs far more per value than the database's own insert (``benchmarks/`` measures
both, with a raw ``executemany`` as the floor). A new store is made from the schema MLflow's
migrations produce (``mlflow_schema.sql``, dumped from the pinned MLflow and checked against it by
the tests) in a temporary file that is linked into place atomically, so any number of processes
can create the same store at once and no migration runs. A store whose schema revision differs
(made by another MLflow version) is not written here: :func:`open_sqlite` raises
:class:`SchemaMismatch` and the caller falls back to MLflow's client.

Write transactions start with ``BEGIN IMMEDIATE`` and wait up to ``timeout`` seconds for other
writers (two sweeps into one store take turns).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

SCHEMA_FILE = Path(__file__).with_name("mlflow_schema.sql")
MAX_FLOAT = sys.float_info.max  # what MLflow stores for +inf
DEFAULT_EXPERIMENT_NAME = "Default"
WORKSPACE = "default"
RUN_NAME_TAG = "mlflow.runName"
TAG_VALUE_LIMIT = 8000  # the tags.value column

# Multi-row writes read their rows from JSON arrays with json_each: one statement, one call.
INSERT_PAIRS = ("INSERT INTO {table} (key, value, run_uuid)"
                " SELECT p.value ->> 0, p.value ->> 1, :run FROM json_each(:rows) AS p")
REPLACE_TAGS = ("INSERT OR REPLACE INTO tags (key, value, run_uuid)"
                " SELECT p.value ->> 0, p.value ->> 1, :run FROM json_each(:rows) AS p")
# Value i of the flattened (k, n) block is metric i // n at step i % n; is_nan is the i-th
# byte of a blob of b"0" and b"1" (a blob, not text: substr on text counts UTF-8 characters
# from the start, O(i) per row, which made the insert 1.5x slower). Rows already stored are
# skipped (a repeated flush).
INSERT_METRICS = (
    "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan)"
    " SELECT :names ->> (v.key / :n), v.value, :times ->> (v.key % :n), :run,"
    " :steps ->> (v.key % :n), substr(:nan, v.key + 1, 1) = x'31' FROM json_each(:values) AS v"
)
# MLflow's rule: latest_metrics holds the row with the greatest (step, timestamp, value).
UPSERT_LATEST = (
    "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)"
    " SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3, r.value ->> 4, :run"
    " FROM json_each(:rows) AS r WHERE true"
    " ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value,"
    " timestamp = excluded.timestamp, step = excluded.step, is_nan = excluded.is_nan"
    " WHERE (excluded.step, excluded.timestamp, excluded.value)"
    " > (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
)


class SchemaMismatch(RuntimeError):
    """The store's schema revision is not the one this module writes."""


class UnreadableStore(RuntimeError):
    """The store's file is not an SQLite database (corrupted, truncated, or another file)."""


class DamagedStore(UnreadableStore):
    """The store's pages fail SQLite's ``PRAGMA quick_check``: writing would damage it more."""


#: Set by the process that checked a store (its path), so the processes it starts (a joblib
#: or Ray sweep's workers) do not read the whole file again.
CHECKED_ENV = "BACKPROP_LAB_STORE_CHECKED"


#: Stores up to this size get SQLite's whole-file quick_check when a command opens them.
FULL_CHECK_BYTES = 64 * 2**20
#: The tables whose pages the open-time check of a larger store skips: ``metrics`` is nearly
#: all of a store's size; its pages are checked by SQLite as writes reach them
#: (:func:`damage_report`).
BIG_TABLES = ("metrics",)


def _damage(path: Path, found: list[str]) -> DamagedStore:
    problems = "; ".join(found).replace("\n", "; ")[:300]
    return DamagedStore(
        f"{path} is damaged (SQLite's quick_check: {problems}); nothing more was written to "
        "it. Recover what it holds into a new file and point tracking.uri at that: sqlite3 "
        f"{path} .recover | sqlite3 {path.with_name('recovered.db')} (the sqlite3 shell), or "
        "go back to a backup; keep the damaged file until then")


def quick_check(con: sqlite3.Connection, tables: Sequence[str] | None = None) -> list[str]:
    """SQLite's ``PRAGMA quick_check`` of the whole file (or of ``tables`` and their indexes):
    ``["ok"]``, or up to five problems."""
    found: list[str] = []
    for table in tables if tables is not None else [None]:
        pragma = "PRAGMA quick_check(5)" if table is None else f'PRAGMA quick_check("{table}")'
        try:
            rows = [row[0] for row in con.execute(pragma)]
        except sqlite3.DatabaseError as exc:
            rows = [str(exc)]
        found += [row for row in rows if row != "ok"]
    return found or ["ok"]


def check_pages(con: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`DamagedStore` if SQLite finds damaged pages, before anything is written.

    A store up to :data:`FULL_CHECK_BYTES` gets the whole-file ``quick_check`` (every page
    read; integrity_check would also compare every index with its table, several times the
    cost). A larger one gets it for every table but :data:`BIG_TABLES` (their cost grows with
    the file: docs/safety.md has the figures on a 1 GB store); their pages are
    checked by SQLite itself as each write reaches them, and a write that meets a damaged page
    is turned into the same error (:func:`damage_report`). Run once per command: the launching
    process records the path in ``$BACKPROP_LAB_STORE_CHECKED`` for its workers.
    """
    if os.environ.get(CHECKED_ENV) == str(path):
        return
    tables = None
    if path.stat().st_size > FULL_CHECK_BYTES:
        tables = [row[0] for row in con.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite_%'") if row[0] not in BIG_TABLES]
    found = quick_check(con, tables)
    if found != ["ok"]:
        raise _damage(path, found)
    os.environ[CHECKED_ENV] = str(path)


def damage_report(store, exc: BaseException) -> BaseException:
    """``exc``, or a :class:`DamagedStore` naming the store when ``exc`` is SQLite reporting
    a damaged page and the whole-file quick_check confirms it (the write was rolled back)."""
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, DamagedStore) or not any(
            word in str(exc) for word in ("malformed", "corrupt")):
        return exc
    try:
        con = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
        try:
            found = quick_check(con)
        finally:
            con.close()
    except sqlite3.Error as error:
        found = [str(error)]
    return _damage(store.path, found) if found != ["ok"] else exc


def schema_revision(schema: str | None = None) -> str:
    """The alembic revision recorded in ``mlflow_schema.sql``."""
    schema = SCHEMA_FILE.read_text() if schema is None else schema
    found = re.search(r"INSERT INTO \"alembic_version\" VALUES\('([0-9a-f]+)'\)", schema)
    if found is None:
        raise SchemaMismatch(f"{SCHEMA_FILE} records no alembic revision")
    return found.group(1)


def dump_schema(db: Path) -> str:
    """The schema of an MLflow SQLite store as SQL: tables, the alembic revision and the default
    workspace, then indexes; without the default experiment, which :func:`create_store` makes
    with its own path and time. Statements are sorted (migrations create indexes in no fixed
    order), so the same schema always dumps to the same text."""
    con = sqlite3.connect(db)
    try:
        statements = list(con.iterdump())
    finally:
        con.close()
    body = [s for s in statements if s not in ("BEGIN TRANSACTION;", "COMMIT;")]
    tables = sorted(s for s in body if s.startswith("CREATE TABLE"))
    rows = sorted(s for s in body
                  if s.startswith("INSERT INTO") and not s.startswith('INSERT INTO "experiments"'))
    others = sorted(s for s in body if not s.startswith(("CREATE TABLE", "INSERT INTO")))
    return "\n".join(["BEGIN TRANSACTION;", *tables, *rows, *others, "COMMIT;"]) + "\n"


def create_store(path: Path) -> bool:
    """Create an MLflow store at ``path`` unless one exists; True if this call created it.

    The schema goes into a temporary file beside ``path``, which ``os.link`` then puts in place
    only if nothing is there yet: concurrent callers never see a half-made store.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.executescript(SCHEMA_FILE.read_text())
            now = _now_ms()
            con.execute(
                "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage,"
                " creation_time, last_update_time, workspace) VALUES (0, ?, ?, 'active', ?, ?, ?)",
                (DEFAULT_EXPERIMENT_NAME, str(path.parent / "mlruns" / "0"), now, now, WORKSPACE),
            )
        finally:
            con.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _rollback(con: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already (it has after a full disk)."""
    if con.in_transaction:
        con.execute("ROLLBACK")


def _now_ms() -> int:
    return int(time.time() * 1000)


def local_artifact_dir(artifact_uri: str) -> Path | None:
    """The folder of a ``file:`` URI or plain path; None for remote artifact stores."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path if parsed.scheme else artifact_uri))
    return None


def deleted_experiment(name: str, where: object) -> ValueError:
    """The error for an experiment that exists but is deleted (every backend raises it)."""
    return ValueError(f"experiment {name!r} in {where} is deleted: restore it (mlflow "
                      "experiments restore) or choose another tracking.experiment")


def wait_all(futures: Iterable) -> None:
    """Wait for every future; raise the first error among them, if any."""
    errors = [exc for exc in (future.exception() for future in futures) if exc is not None]
    if errors:
        raise errors[0]


def first_failure(pending: list) -> BaseException | None:
    """The first error among the finished futures of ``pending``, without waiting; finished
    futures without an error are dropped from the list (it stays short over a long run)."""
    keep, found = [], None
    for future in pending:
        if not future.done():
            keep.append(future)
        elif future.exception() is not None:
            keep.append(future)
            found = found or future.exception()
    pending[:] = keep
    return found


def _pairs(run_id: str, items: Mapping[str, str], limit: int | None = None) -> dict:
    """json_each parameters for (key, value) rows of one run."""
    return {"run": run_id, "rows": json.dumps([[k, v[:limit]] for k, v in items.items()])}


def sanitize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(stored values, is_nan) as MLflow stores floats: NaN -> 0 with is_nan, +/-inf -> +/-max."""
    is_nan = np.isnan(values)
    stored = np.clip(np.where(is_nan, 0.0, values), -MAX_FLOAT, MAX_FLOAT)
    return stored, is_nan


class SqliteStore:
    """One connection to an MLflow SQLite store; see the module docstring."""

    def __init__(self, path: Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.created = create_store(self.path)
        self.con = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        try:
            found = self.con.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as exc:  # a database without MLflow's tables
            self.con.close()
            if "no such table" in str(exc):
                raise SchemaMismatch(f"{self.path} is not an MLflow store: {exc}") from exc
            raise
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            self.con.close()
            raise UnreadableStore(
                f"{self.path} is not a readable MLflow store ({exc}); it may be corrupted: "
                "move it aside (MLflow's UI cannot read it either) or choose another "
                "tracking.uri") from exc
        expected = schema_revision()
        if found is None or found[0] != expected:
            self.con.close()
            raise SchemaMismatch(
                f"{self.path} has schema revision {found[0] if found else None}, "
                f"this writer knows {expected}")
        if not self.created:
            try:
                check_pages(self.con, self.path)
            except DamagedStore:
                self.con.close()
                raise

    def __repr__(self) -> str:
        return f"SqliteStore({self.path})"

    def close(self) -> None:
        self.con.close()

    def _transaction(self, statements: Iterable[tuple[str, Mapping | Sequence]]) -> None:
        """Run (sql, parameters) pairs in one write transaction."""
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            for sql, parameters in statements:
                con.execute(sql, parameters)
        except BaseException:
            _rollback(con)
            raise
        con.execute("COMMIT")

    # -- experiments and runs -------------------------------------------------------------------
    def ensure_experiment(self, name: str, artifact_location: str | None) -> str:
        """The id of the active experiment ``name``, created with ``artifact_location`` if new
        (None: ``<store folder>/mlruns/<id>``, MLflow's default root beside the store)."""
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            row = con.execute(
                "SELECT experiment_id, lifecycle_stage FROM experiments"
                " WHERE name = ? AND workspace = ?", (name, WORKSPACE)).fetchone()
            if row is None:
                now = _now_ms()
                cursor = con.execute(
                    "INSERT INTO experiments (name, artifact_location, lifecycle_stage,"
                    " creation_time, last_update_time, workspace)"
                    " VALUES (?, ?, 'active', ?, ?, ?)",
                    (name, artifact_location, now, now, WORKSPACE))
                row = (cursor.lastrowid, "active")
                if artifact_location is None:  # MLflow's rule: <default root>/<experiment id>
                    con.execute("UPDATE experiments SET artifact_location = ?"
                                " WHERE experiment_id = ?",
                                (str(self.path.parent / "mlruns" / str(row[0])), row[0]))
            else:  # a write that changes nothing: a read-only store fails here, before any run
                con.execute("UPDATE experiments SET last_update_time = last_update_time"
                            " WHERE experiment_id = ?", (row[0],))
        except BaseException:
            _rollback(con)
            raise
        con.execute("COMMIT")
        if row[1] != "active":
            raise deleted_experiment(name, self.path)
        return str(row[0])

    def artifact_location(self, experiment_id: str) -> str:
        row = self.con.execute("SELECT artifact_location FROM experiments WHERE experiment_id = ?",
                               (int(experiment_id),)).fetchone()
        if row is None:
            raise ValueError(f"no experiment with id {experiment_id} in {self.path}")
        return row[0]

    @staticmethod
    def artifact_uri(artifact_location: str, run_id: str) -> str:
        """Where MLflow puts a run's artifacts: ``<experiment's location>/<run id>/artifacts``."""
        return f"{artifact_location.rstrip('/')}/{run_id}/artifacts"

    def create_run(self, run_id: str, experiment_id: str, run_name: str, artifact_uri: str,
                   tags: Mapping[str, str], params: Mapping[str, str]) -> None:
        """A new RUNNING run with its tags and params, as MLflow's ``create_run`` makes it."""
        tags = {RUN_NAME_TAG: run_name, **tags}
        user = tags.get("mlflow.user", "unknown")
        self._transaction([
            ("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name,"
             " user_id, status, start_time, end_time, source_version, lifecycle_stage,"
             " artifact_uri, experiment_id, deleted_time)"
             " VALUES (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, NULL, '', 'active', ?, ?, NULL)",
             (run_id, run_name, user, _now_ms(), artifact_uri, int(experiment_id))),
            (INSERT_PAIRS.format(table="tags"), _pairs(run_id, tags, TAG_VALUE_LIMIT)),
            (INSERT_PAIRS.format(table="params"), _pairs(run_id, params)),
        ])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._transaction([(REPLACE_TAGS, _pairs(run_id, tags, TAG_VALUE_LIMIT))])

    def end_run(self, run_id: str, status: str, tags: Mapping[str, str]) -> None:
        """Set tags, then the terminal ``status`` and the end time, in one transaction."""
        self._transaction([
            (REPLACE_TAGS, _pairs(run_id, tags, TAG_VALUE_LIMIT)),
            ("UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?",
             (status, _now_ms(), run_id)),
        ])

    def mark_failed(self, run_id: str, tags: Mapping[str, str], status: str = "FAILED") -> bool:
        """``status`` with ``tags``, only if the run is still RUNNING (an orphan); True if
        marked."""
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            changed = con.execute(
                "UPDATE runs SET status = ?, end_time = ?"
                " WHERE run_uuid = ? AND status = 'RUNNING'", (status, _now_ms(), run_id)).rowcount
            if changed:
                con.execute(REPLACE_TAGS, _pairs(run_id, tags, TAG_VALUE_LIMIT))
        except BaseException:
            _rollback(con)
            raise
        con.execute("COMMIT")
        return bool(changed)

    def running_runs(self, experiment_ids: Sequence[str] | None = None) -> list:
        """Every active RUNNING run (of ``experiment_ids``, None: all) with its heartbeat tags."""
        from backprop_lab.contract import HEARTBEAT_TAG, OUTPUT_DIR_TAG, PROCESS_TAG
        from backprop_lab.tracking.records import RunningRun

        sql = ("SELECT r.run_uuid, r.name, r.experiment_id, r.start_time, p.value, h.value,"
               " o.value FROM runs AS r"
               " LEFT JOIN tags AS p ON p.run_uuid = r.run_uuid AND p.key = ?"
               " LEFT JOIN tags AS h ON h.run_uuid = r.run_uuid AND h.key = ?"
               " LEFT JOIN tags AS o ON o.run_uuid = r.run_uuid AND o.key = ?"
               " WHERE r.status = 'RUNNING' AND r.lifecycle_stage = 'active'")
        parameters: list = [PROCESS_TAG, HEARTBEAT_TAG, OUTPUT_DIR_TAG]
        if experiment_ids is not None:
            sql += f" AND r.experiment_id IN ({', '.join('?' * len(experiment_ids))})"
            parameters += [int(i) for i in experiment_ids]
        rows = self.con.execute(sql + " ORDER BY r.start_time", parameters).fetchall()
        return [RunningRun(run_id, name or "", str(exp), int(start or 0), process,
                           int(beat) if beat and beat.isdigit() else None, folder)
                for run_id, name, exp, start, process, beat, folder in rows]

    def experiment_id(self, name: str) -> str | None:
        row = self.con.execute("SELECT experiment_id FROM experiments WHERE name = ?"
                               " AND workspace = ?", (name, WORKSPACE)).fetchone()
        return None if row is None else str(row[0])

    # -- metrics --------------------------------------------------------------------------------
    def log_metrics(self, run_id: str, names: Sequence[str], steps: np.ndarray,
                    values: np.ndarray, timestamps: np.ndarray) -> None:
        """Write a block of history: metric ``names[i]`` took ``values[i, j]`` at ``steps[j]``.

        Shapes: names (k,), steps (n,) int, values (k, n) float, timestamps (n,) int
        (milliseconds since the epoch). One transaction: k * n ``metrics`` rows, inserted by
        one statement that reads them from JSON arrays (``json_each``: the rows never become
        Python objects, and the insert runs without holding the GIL), and k ``latest_metrics``
        upserts.
        """
        self.log_metric_blocks(run_id, [(names, steps, values, timestamps)])

    def log_metric_blocks(self, run_id: str, blocks: Sequence[tuple]) -> None:
        """Several blocks (names, steps, values, timestamps), each as :meth:`log_metrics`
        takes it, in one transaction: blocks whose metrics have different steps (the log10
        companions, the run's end-of-run summary) cost no commit of their own."""
        statements = [s for block in blocks for s in self._block_statements(run_id, *block)]
        if statements:
            self._transaction(statements)

    @staticmethod
    def _block_statements(run_id: str, names: Sequence[str], steps: np.ndarray,
                          values: np.ndarray, timestamps: np.ndarray) -> list[tuple]:
        k, n = values.shape
        if k == 0 or n == 0:
            return []
        stored, is_nan = sanitize(np.asarray(values, dtype=np.float64))
        # The latest value of each key in this block: greatest (step, timestamp, value).
        order = np.lexsort((stored, np.broadcast_to(timestamps, (k, n)),
                            np.broadcast_to(steps, (k, n))), axis=-1)[:, -1]
        pick = (np.arange(k), order)
        latest = list(zip(names, stored[pick].tolist(), timestamps[order].tolist(),
                          steps[order].tolist(), is_nan[pick].astype(int).tolist()))
        return [
            (INSERT_METRICS, {
                "run": run_id, "n": n, "names": json.dumps(list(names)),
                "steps": json.dumps(steps.tolist()), "times": json.dumps(timestamps.tolist()),
                "values": json.dumps(stored.ravel().tolist()),
                "nan": (is_nan.ravel().astype(np.uint8) + ord("0")).tobytes(),
            }),
            (UPSERT_LATEST, {"run": run_id, "rows": json.dumps(latest)}),
        ]

    # -- artifacts ------------------------------------------------------------------------------
    def run_artifact_uri(self, run_id: str) -> str:
        row = self.con.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?",
                               (run_id,)).fetchone()
        if row is None:
            raise ValueError(f"no run {run_id} in {self.path}")
        return row[0]

    @staticmethod
    def copy_artifact(local: Path, root: Path, artifact_path: str | None) -> None:
        """A file or a folder's contents into ``root/artifact_path`` (MLflow's local layout)."""
        target = root / artifact_path if artifact_path else root
        if local.is_dir():
            shutil.copytree(local, target, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target / local.name)


def main(argv: list[str] | None = None) -> int:
    """``python -m backprop_lab.tracking.sqlite_store --write-schema``: regenerate the schema
    file from the installed MLflow (after an MLflow upgrade). ``--check DB``: the whole-file
    quick_check of a store."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write-schema", action="store_true",
                        help=f"dump a fresh MLflow store's schema into {SCHEMA_FILE.name}")
    parser.add_argument("--check", metavar="DB", type=Path, default=None,
                        help="SQLite's whole-file quick_check of a store (exit 1 if damaged)")
    args = parser.parse_args(argv)
    if args.check is not None:
        con = sqlite3.connect(f"file:{args.check}?mode=ro", uri=True)
        try:
            found = quick_check(con)
        finally:
            con.close()
        if found != ["ok"]:
            print(_damage(args.check, found), file=sys.stderr)
            return 1
        print(f"{args.check}: ok")
        return 0
    if not args.write_schema:
        parser.print_help()
        return 0
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "mlflow.db"
        MlflowClient(f"sqlite:///{db}").search_experiments()  # creates and migrates
        SCHEMA_FILE.write_text(dump_schema(db))
    print(f"wrote {SCHEMA_FILE} (revision {schema_revision()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
