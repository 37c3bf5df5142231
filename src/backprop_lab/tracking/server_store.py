"""MLflow's SQL tracking store with metrics written in bulk: the store of our tracking server.

``mlflow server --backend-store-uri backprop-lab+postgresql+psycopg2://...`` (what
scripts/tracking_server.py starts) serves through :class:`BulkMetricsSqlAlchemyStore`: MLflow's
own ``SqlAlchemyStore`` in every respect but one. Its ``log_batch`` adds metrics as ORM objects
and compares ``latest_metrics`` key by key in Python; here a batch goes into MLflow's ``metrics``
table in bulk, skipping rows already stored (``ON CONFLICT DO NOTHING``: a retried batch is
stored once), and one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` into ``latest_metrics``
keeps per (run, key) the row with the greatest (step, timestamp, value), exactly as MLflow does;
both in the session's transaction, through the driver. On PostgreSQL the rows are streamed with
``COPY`` straight into ``metrics``; a block that meets rows already stored (a retry: COPY stops
at the primary key) is rolled back to a savepoint and streamed into a temporary table instead,
then moved by one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. Measured per value on the
flagship's blocks (37 metrics x 221 steps): COPY into ``metrics`` about 11 us, through the
staging table with ``ON CONFLICT`` about 14.5 us, psycopg2's ``execute_values`` about 23 us
(most of that difference being the client-side formatting of each row). Where the database user
may (a superuser, or a user granted SET on ``session_replication_role``, as the project's own
server's user is: server.py), the block also
skips the foreign key's per-row check on ``runs``, taking once the lock that check takes: about
7 us a value then. On SQLite it is sqlite3's ``executemany`` (SQLAlchemy's executemany would send
a row at a time). Values are sanitized as MLflow does (NaN stored as 0 with ``is_nan``, +/-inf
clamped): by MLflow's own function for batches, with numpy for blocks.
Other databases and drivers take MLflow's own path.

The scheme ``backprop-lab+<database URI>`` is registered with MLflow's ``mlflow.tracking_store``
entry point (pyproject.toml, entry_points.py); the prefix is removed before the URI reaches
SQLAlchemy.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.validation import _validate_metric, _validate_metric_name, _validate_run_id

INSERT_METRICS = ("INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid)"
                  " VALUES {values} ON CONFLICT DO NOTHING")
# A per-connection staging table, emptied at every commit.
CREATE_STAGING = ("CREATE TEMP TABLE IF NOT EXISTS metrics_staging (LIKE metrics)"
                  " ON COMMIT DELETE ROWS")
COPY_STAGING = ("COPY metrics_staging (key, value, timestamp, step, is_nan, run_uuid)"
                " FROM STDIN")
COPY_METRICS = ("COPY metrics (key, value, timestamp, step, is_nan, run_uuid) FROM STDIN")
# The lock the foreign key metrics.run_uuid -> runs takes for each row, taken once a block.
LOCK_RUN = "SELECT 1 FROM runs WHERE run_uuid = %s FOR KEY SHARE"
MOVE_STAGING = ("INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid)"
                " SELECT key, value, timestamp, step, is_nan, run_uuid FROM metrics_staging"
                " ON CONFLICT DO NOTHING")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
UPSERT_LATEST = (
    "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES {values}"
    " ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value,"
    " timestamp = excluded.timestamp, step = excluded.step, is_nan = excluded.is_nan"
    " WHERE (excluded.step, excluded.timestamp, excluded.value)"
    " > (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
)


class BulkMetricsSqlAlchemyStore(SqlAlchemyStore):
    """``SqlAlchemyStore`` whose metric batches are bulk inserts (see the module docstring)."""

    _skip_fk: bool | None = None  # see _can_skip_fk_checks

    def _bulk(self) -> bool:
        dialect = self.engine.dialect
        return (dialect.name, dialect.driver) in (("postgresql", "psycopg2"),
                                                  ("sqlite", "pysqlite"))

    def _log_metrics_once(self, run_id, metrics):
        if not self._bulk():
            return super()._log_metrics_once(run_id, metrics)
        if len(metrics) == 1:  # log_metric's path; log_batch has validated its batch already
            metric = metrics[0]
            _validate_metric(metric.key, metric.value, metric.timestamp, metric.step)
        rows: dict[tuple, None] = {}  # identical values logged twice are stored once
        for metric in metrics:
            is_nan, value = self.sanitize_metric_value(metric.value)
            rows[(metric.key, value, metric.timestamp, metric.step, is_nan, run_id)] = None
        self._write_metric_rows(run_id, list(rows))

    def log_metric_block(self, run_id: str, names: list[str], steps: list[int],
                         timestamps: list[int], values: list[list[float]]) -> int:
        """Metric ``names[i]`` took ``values[i][j]`` at ``steps[j]``, logged at
        ``timestamps[j]`` (ms): the block the project's client sends (server_app.py).
        Returns the number of values written."""
        if len(steps) != len(timestamps) or len(values) != len(names) or any(
                len(row) != len(steps) for row in values):
            raise MlflowException("a metric block needs len(values) == len(names) and rows of "
                                  "len(steps) == len(timestamps)", INVALID_PARAMETER_VALUE)
        _validate_run_id(run_id)
        for name in names:
            _validate_metric_name(name)
        for step, timestamp in zip(steps, timestamps):
            if not isinstance(step, int) or not isinstance(timestamp, int):
                raise MlflowException(f"steps and timestamps must be integers: {step!r}, "
                                      f"{timestamp!r}", INVALID_PARAMETER_VALUE)
        if not self._bulk():
            from mlflow.entities import Metric

            metrics = [Metric(name, float(value), timestamp, step)
                       for name, row in zip(names, values)
                       for value, timestamp, step in zip(row, timestamps, steps)]
            super()._log_metrics(run_id, metrics)
            return len(metrics)
        grid = np.asarray(values, dtype=np.float64).reshape(len(names), len(steps))
        if len(set(names)) < len(names) or len(set(steps)) < len(steps):
            # Rows may repeat: MLflow stores identical ones once.
            sanitize = self.sanitize_metric_value
            rows: dict[tuple, None] = {}
            for name, row in zip(names, grid.tolist()):
                for value, timestamp, step in zip(row, timestamps, steps):
                    is_nan, stored = sanitize(value)
                    rows[(name, stored, timestamp, step, is_nan, run_id)] = None
            self._write_metric_rows(run_id, list(rows))
            return len(rows)
        block = _Block(run_id, names, steps, timestamps, grid)
        self._write_metric_rows(run_id, block, copy_text=block.copy_text,
                                latest_rows=block.latest_rows())
        return grid.size

    def _can_skip_fk_checks(self, cursor) -> bool:
        """May this PostgreSQL user set ``session_replication_role``: a superuser, or (since
        PostgreSQL 15) a user granted ``SET`` on it, as the project's own server's user
        ``mlflow_app`` is (server.py)? Then a block's ``metrics`` rows skip the foreign key's
        per-row check (about 3 of 9 us a row, measured on a COPY of the flagship's blocks);
        the run is locked once instead (``LOCK_RUN``)."""
        if self._skip_fk is None:
            cursor.execute("SELECT rolsuper, current_setting('server_version_num')::int"
                           " FROM pg_roles WHERE rolname = current_user")
            found = cursor.fetchone()
            allowed = bool(found and found[0])
            if not allowed and found and found[1] >= 150000:
                cursor.execute("SELECT has_parameter_privilege('session_replication_role',"
                               " 'SET')")
                allowed = bool(cursor.fetchone()[0])
            self._skip_fk = allowed
        return self._skip_fk

    def _write_metric_rows(self, run_id: str, rows: Iterable[tuple], *,
                           copy_text: Callable[[], io.StringIO] | None = None,
                           latest_rows: list[tuple] | None = None) -> None:
        """(key, value, timestamp, step, is_nan, run_uuid) rows, sanitized, into ``metrics``
        and ``latest_metrics`` in one transaction. ``copy_text`` (the rows in COPY's format)
        and ``latest_rows`` (per key the greatest row, keys sorted) are computed from ``rows``
        unless given."""
        if latest_rows is None:
            latest: dict[str, tuple] = {}
            for row in rows:
                best = latest.get(row[0])
                if best is None or (row[3], row[2], row[1]) > (best[3], best[2], best[1]):
                    latest[row[0]] = row
            # Keys in one order in every transaction: concurrent batches cannot deadlock.
            latest_rows = [latest[key] for key in sorted(latest)]
        if not latest_rows:
            return
        postgres = self.engine.dialect.name == "postgresql"
        with self.ManagedSessionMaker(read_only=False) as session:
            run = self._get_run(run_uuid=run_id, session=session)
            self._check_run_is_active(run)
            cursor = session.connection().connection.dbapi_connection.cursor()
            try:
                if postgres:
                    from psycopg2.errors import UniqueViolation
                    from psycopg2.extras import execute_values

                    text = copy_text() if copy_text is not None else _copy_text(list(rows))
                    skip_fk = self._can_skip_fk_checks(cursor)
                    if skip_fk:
                        # What the foreign key's per-row check does, once: the run exists and
                        # cannot be deleted before this transaction ends.
                        cursor.execute(LOCK_RUN, (run_id,))
                        if cursor.fetchone() is None:
                            raise MlflowException(f"Run '{run_id}' not found",
                                                  RESOURCE_DOES_NOT_EXIST)
                        cursor.execute("SET LOCAL session_replication_role = replica")
                    cursor.execute("SAVEPOINT metric_block")
                    try:
                        cursor.copy_expert(COPY_METRICS, text)
                    except UniqueViolation:
                        cursor.execute("ROLLBACK TO SAVEPOINT metric_block")
                        text.seek(0)
                        cursor.execute(CREATE_STAGING)
                        cursor.copy_expert(COPY_STAGING, text)
                        cursor.execute(MOVE_STAGING)
                    if skip_fk:
                        cursor.execute("SET LOCAL session_replication_role = origin")
                    execute_values(cursor, UPSERT_LATEST.format(values="%s"), latest_rows,
                                   page_size=1000)
                else:
                    cursor.executemany(INSERT_METRICS.format(values="(?, ?, ?, ?, ?, ?)"),
                                       iter(rows))
                    cursor.executemany(UPSERT_LATEST.format(values="(?, ?, ?, ?, ?, ?)"),
                                       latest_rows)
            finally:
                cursor.close()


def _copy_text(rows: list[tuple]) -> io.StringIO:
    """(key, value, timestamp, step, is_nan, run_uuid) rows in COPY's text format: one line a
    row, tab-separated; ``repr`` of a float reads back as the same double."""
    escaped = {key: key.translate(_COPY_ESCAPES) for key in {row[0] for row in rows}}
    lines = []
    for key, value, timestamp, step, is_nan, run_uuid in rows:
        lines.append(f"{escaped[key]}\t{value!r}\t{timestamp}\t{step}\t"
                     f"{'t' if is_nan else 'f'}\t{run_uuid}\n")
    return io.StringIO("".join(lines))


class _Block:
    """A metric block as rows: metric ``names[i]`` took ``grid[i, j]`` at ``steps[j]``, logged
    at ``timestamps[j]``; names and steps distinct. Sanitized as MLflow does (NaN: 0 with
    ``is_nan``; +/-inf: +/-``sys.float_info.max``), with numpy rather than value by value."""

    def __init__(self, run_id: str, names: list[str], steps: list[int], timestamps: list[int],
                 grid: np.ndarray) -> None:
        self.run_id, self.names, self.steps, self.timestamps = run_id, names, steps, timestamps
        self.is_nan = np.isnan(grid)
        top = sys.float_info.max
        self.stored = np.where(self.is_nan, 0.0, np.clip(grid, -top, top))

    def __iter__(self) -> Iterator[tuple]:
        for name, row, nan in zip(self.names, self.stored.tolist(), self.is_nan.tolist()):
            for value, timestamp, step, is_nan in zip(row, self.timestamps, self.steps, nan):
                yield name, value, timestamp, step, is_nan, self.run_id

    def latest_rows(self) -> list[tuple]:
        """Per name the row of the greatest (step, timestamp, value), names sorted."""
        k, n = self.stored.shape
        if k == 0 or n == 0:
            return []
        steps, times = np.asarray(self.steps), np.asarray(self.timestamps)
        order = np.lexsort((self.stored, np.broadcast_to(times, (k, n)),
                            np.broadcast_to(steps, (k, n))), axis=-1)[:, -1]
        rows = [(name, float(self.stored[i, j]), int(times[j]), int(steps[j]),
                 bool(self.is_nan[i, j]), self.run_id)
                for i, (name, j) in enumerate(zip(self.names, order.tolist()))]
        return sorted(rows)

    def copy_text(self) -> io.StringIO:
        """The rows in COPY's text format (as :func:`_copy_text`), built a column at a time."""
        tails = [f"\t{t}\t{s}\t" for t, s in zip(self.timestamps, self.steps)]
        end = f"\t{self.run_id}\n"
        flags = ("f" + end, "t" + end)
        lines = []
        for name, row, nan in zip(self.names, self.stored.tolist(), self.is_nan.tolist()):
            key = name.translate(_COPY_ESCAPES)
            lines += [f"{key}\t{value!r}{tail}{flags[is_nan]}"
                      for value, tail, is_nan in zip(row, tails, nan)]
        return io.StringIO("".join(lines))
