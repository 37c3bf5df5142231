"""One interface to write runs into an MLflow store, whatever the store is.

:func:`open_store` returns

- :class:`SqliteBackend` for a ``sqlite:///`` store whose schema this package writes (a new one
  included): rows written directly with ``sqlite3`` (see sqlite_store.py). mlflow is not
  imported at all, unless the store's artifacts live somewhere remote.
- :class:`~backprop_lab.tracking.rest_store.RestBackend` for a plain ``http://`` tracking
  server: MLflow's REST API with the standard library (no mlflow import), each metric block in
  one request to the route our server adds (server_app.py), sent by a pool of threads, several
  requests in flight, so training does not wait for the server.
- :class:`MlflowBackend` for everything else (https or servers that need MLflow's credentials,
  PostgreSQL or MySQL URIs, SQLite stores of another MLflow version): MLflow's own
  ``MlflowClient``; over HTTP its ``log-batch`` requests are sent by a pool of threads too.

:meth:`Backend.flush` waits for everything sent so far and raises the first error.

Both take metrics as blocks of history (names (k,), steps (n,), values (k, n), timestamps (n,))
and store them as MLflow would: NaN kept as NaN, +/-inf clamped to +/-1.797e308.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np

from backprop_lab.contract import telemetry_off
from backprop_lab.tracking.secrets import mask
from backprop_lab.tracking.sqlite_store import (
    SchemaMismatch,
    SqliteStore,
    damage_report,
    deleted_experiment,
    first_failure,
    local_artifact_dir,
    wait_all,
)

telemetry_off()  # MLflow is imported lazily, always after this

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000
HTTP_REQUESTS_IN_FLIGHT = 4
BLOCK_ROUTE = "/backprop-lab/api/log-metric-block"  # server_app.py


@dataclass
class ArtifactSpec:
    """A local file or folder and where it goes in the run's artifacts."""

    local: Path
    artifact_path: str | None = None  # folder inside the run's artifacts; None = top level


def text(value: Any) -> str:
    """A param or tag value as MLflow accepts it (at most 6000 characters), credentials masked
    (tracking/secrets.py): nothing a run records holds a password or a token."""
    return mask(str(value))[:MAX_PARAM_VALUE]


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for anything else or ``:memory:``)."""
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return Path(uri[len("sqlite:///"):])
    return None


class Backend(Protocol):
    uri: str

    def ensure_experiment(self, name: str, artifact_location: str | None) -> str: ...

    def create_run(self, experiment_id: str, run_name: str, params: Mapping[str, Any],
                   tags: Mapping[str, Any]) -> str: ...

    def log_metrics(self, run_id: str, names: Sequence[str], steps: np.ndarray,
                    values: np.ndarray, timestamps: np.ndarray) -> None: ...

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None: ...

    def log_artifacts(self, run_id: str, specs: Iterable[ArtifactSpec]) -> None: ...

    def end_run(self, run_id: str, status: str, tags: Mapping[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def failure(self) -> BaseException | None: ...

    def running_runs(self, experiment_ids: Sequence[str] | None = None) -> list: ...

    def mark_failed(self, run_id: str, tags: Mapping[str, Any],
                    status: str = "FAILED") -> bool: ...

    def experiment_id(self, name: str) -> str | None: ...


def log_metric_blocks(backend, run_id: str, blocks) -> None:
    """Write blocks (names, steps, values, timestamps) in one write where the backend can
    (SQLite: one transaction), else one :meth:`Backend.log_metrics` each."""
    blocks = [b for b in blocks if np.asarray(b[2]).size]
    if len(blocks) > 1 and hasattr(backend, "log_metric_blocks"):
        backend.log_metric_blocks(run_id, blocks)
    else:
        for block in blocks:
            backend.log_metrics(run_id, *block)


class SqliteBackend:
    """Writes with :class:`~backprop_lab.tracking.sqlite_store.SqliteStore`, on a thread.

    Every write goes, in order, to one writer thread that owns the connection, so training goes
    on while a block is inserted: the inserts run in SQLite without the GIL, on the other core.
    Calls that need an answer (:meth:`ensure_experiment`) and :meth:`end_run` wait for
    everything before them; :meth:`flush` waits and raises the first error. After an error the
    writes queued behind it are not made (they would refer to a run that may not exist).
    """

    def __init__(self, uri: str, store) -> None:
        self.uri = uri
        self.store = store
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._pending: list[Future] = []
        self._error: BaseException | None = None
        self._locations: dict[str, str] = {}  # experiment id -> artifact location
        self._artifact_uris: dict[str, str] = {}  # run id -> artifact URI

    def _write(self, fn, *args, always: bool = False) -> Future:
        def guarded():
            if self._error is None or always:
                try:
                    return fn(*args)
                except BaseException as exc:
                    error = damage_report(self.store, exc)  # a damaged page: say so
                    self._error = error
                    if error is exc:
                        raise
                    raise error from None
            return None

        try:
            future = self._writer.submit(guarded)
        except RuntimeError:  # at interpreter exit (atexit handlers): the pool takes no more
            future = Future()
            try:
                future.set_result(guarded())
            except BaseException as exc:
                future.set_exception(exc)
        self._pending.append(future)
        return future

    def flush(self) -> None:
        """Wait for every write queued so far; raise the first error."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.exception()  # waits
        if self._error is not None:
            raise self._error

    def failure(self) -> BaseException | None:
        """The error of a write that failed so far, without waiting (None: none)."""
        return self._error

    def _call(self, fn, *args):
        """Run ``fn`` on the writer after everything queued before it; return its result."""
        future = self._write(fn, *args)
        self.flush()
        return future.result()

    def ensure_experiment(self, name: str, artifact_location: str | None) -> str:
        return self._call(self.store.ensure_experiment, name, artifact_location)

    def create_run(self, experiment_id, run_name, params, tags) -> str:
        if experiment_id not in self._locations:
            self._locations[experiment_id] = self._call(self.store.artifact_location,
                                                        experiment_id)
        run_id = uuid.uuid4().hex
        artifact_uri = self.store.artifact_uri(self._locations[experiment_id], run_id)
        self._artifact_uris[run_id] = artifact_uri
        # Waited for: a store that cannot be written fails here, before training starts.
        self._call(self.store.create_run, run_id, experiment_id, run_name, artifact_uri,
                   {k: text(v) for k, v in tags.items()}, {k: text(v) for k, v in params.items()})
        return run_id

    def log_metrics(self, run_id, names, steps, values, timestamps) -> None:
        self._write(self.store.log_metrics, run_id, names, steps, values, timestamps)

    def log_metric_blocks(self, run_id, blocks) -> None:
        """Several blocks, one transaction (:meth:`SqliteStore.log_metric_blocks`)."""
        self._write(self.store.log_metric_blocks, run_id, list(blocks))

    def set_tags(self, run_id, tags) -> None:
        self._write(self.store.set_tags, run_id, {k: text(v) for k, v in tags.items()})

    def log_artifacts(self, run_id, specs) -> None:
        uri = self._artifact_uris.get(run_id)
        if uri is None:  # a run this process did not create
            uri = self._call(self.store.run_artifact_uri, run_id)
        root = local_artifact_dir(uri)
        if root is None:  # a remote artifact store: MLflow's artifact repositories
            self.flush()
            MlflowBackend(self.uri).log_artifacts(run_id, specs)
            return
        for spec in specs:
            if spec.local.exists():
                self._write(self.store.copy_artifact, spec.local, root, spec.artifact_path)

    def end_run(self, run_id, status, tags) -> None:
        """Queued behind the run's metrics and artifacts; returns once all of them are stored.

        Made even after an earlier write failed (that error is :meth:`flush`'s to raise): a run
        must not stay RUNNING because its metrics could not be written.
        """
        future = self._write(self.store.end_run, run_id, status,
                             {k: text(v) for k, v in tags.items()}, always=True)
        pending, self._pending = self._pending, []
        for queued in pending:
            queued.exception()  # waits
        future.result()

    def running_runs(self, experiment_ids=None) -> list:
        return self._call(self.store.running_runs, experiment_ids)

    def mark_failed(self, run_id, tags, status: str = "FAILED") -> bool:
        return self._call(self.store.mark_failed, run_id, {k: text(v) for k, v in tags.items()},
                          status)

    def experiment_id(self, name: str) -> str | None:
        return self._call(self.store.experiment_id, name)


class MlflowBackend:
    """Writes through ``MlflowClient``; metric batches in background threads over HTTP."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        remote = urlparse(uri).scheme in ("http", "https")
        self._pool = (ThreadPoolExecutor(HTTP_REQUESTS_IN_FLIGHT, thread_name_prefix="mlflow-send")
                      if remote else None)
        self._pending: list[Future] = []

    def ensure_experiment(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage != "active":
                raise deleted_experiment(name, self.uri)
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # created meanwhile by another process
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def create_run(self, experiment_id, run_name, params, tags) -> str:
        from mlflow.entities import Param

        run_id = self.client.create_run(experiment_id, run_name=run_name,
                                        tags={k: text(v) for k, v in tags.items()}).info.run_id
        items = [Param(k, text(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH],
                                  synchronous=True)
        return run_id

    def log_metrics(self, run_id, names, steps, values, timestamps) -> None:
        block = {"run_id": run_id, "names": list(names), "steps": steps.tolist(),
                 "timestamps": timestamps.tolist(),
                 "values": np.asarray(values, dtype=np.float64).tolist()}
        if self._pool is None:
            self._log_batches(block)
        else:
            self._pending.append(self._pool.submit(self._log_batches, block))

    def _log_batches(self, block: dict) -> None:
        """The block as MLflow log_batch calls of at most 1000 metrics."""
        from mlflow.entities import Metric

        metrics = [Metric(name, value, ts, step)
                   for name, row in zip(block["names"], block["values"])
                   for value, ts, step in zip(row, block["timestamps"], block["steps"])]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(block["run_id"], metrics=metrics[i : i + MAX_METRICS_PER_BATCH],
                                  synchronous=True)

    def set_tags(self, run_id, tags) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, text(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[i : i + MAX_PARAMS_PER_BATCH],
                                  synchronous=True)

    def log_artifacts(self, run_id, specs) -> None:
        for spec in specs:
            if spec.local.is_dir():
                self.client.log_artifacts(run_id, str(spec.local), spec.artifact_path)
            elif spec.local.exists():
                self.client.log_artifact(run_id, str(spec.local), spec.artifact_path)

    def end_run(self, run_id, status, tags) -> None:
        """After the metric batches in flight (their errors are :meth:`flush`'s to raise)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.exception()  # waits
        self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, status=status)

    def running_runs(self, experiment_ids=None) -> list:
        from backprop_lab.tracking.orphans import RunningRun

        if experiment_ids is None:
            experiment_ids = [e.experiment_id for e in self.client.search_experiments()]
        runs = self.client.search_runs(experiment_ids, "attributes.status = 'RUNNING'",
                                       max_results=5000) if experiment_ids else []
        return [running_run(RunningRun, r.info.run_id, r.info.run_name, r.info.experiment_id,
                            r.info.start_time, r.data.tags) for r in runs]

    def mark_failed(self, run_id, tags, status: str = "FAILED") -> bool:
        if self.client.get_run(run_id).info.status != "RUNNING":
            return False
        self.end_run(run_id, status, tags)
        return True

    def experiment_id(self, name: str) -> str | None:
        found = self.client.get_experiment_by_name(name)
        return None if found is None else found.experiment_id

    def flush(self) -> None:
        """Wait for every metric batch sent so far; raise the first error among them."""
        pending, self._pending = self._pending, []
        wait_all(pending)

    def failure(self) -> BaseException | None:
        """The error of a batch that failed so far, without waiting (None: none)."""
        return first_failure(self._pending)


def running_run(make, run_id: str, name: str | None, experiment_id: str, start_time,
                tags: Mapping[str, str]):
    """A :class:`~backprop_lab.tracking.orphans.RunningRun` from a run's fields and tags."""
    from backprop_lab.contract import HEARTBEAT_TAG, OUTPUT_DIR_TAG, PROCESS_TAG

    beat = tags.get(HEARTBEAT_TAG)
    return make(run_id, name or "", str(experiment_id), int(start_time or 0),
                tags.get(PROCESS_TAG), int(beat) if beat and beat.isdigit() else None,
                tags.get(OUTPUT_DIR_TAG))


def store_problem(exc: BaseException, *, created: bool = False) -> str:
    """What is wrong with a store, said for a user: the cause first, then the error itself.

    ``created``: the run exists already (else: nothing was created, and the text says so).
    """
    import errno
    import sqlite3

    text = f"{type(exc).__name__}: {exc}"
    tail = "" if created else "; nothing was created"
    if (isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)) or (
            isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc)):
        return f"the store's folder is read-only or not writable ({text}){tail}"
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in str(exc):
        return f"the disk is full ({text}){tail}"
    if isinstance(exc, (ConnectionError, TimeoutError)) or (
            isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET,
                                                       errno.EHOSTUNREACH, errno.ETIMEDOUT)):
        return f"the tracking server stopped answering ({text}){tail}"
    return text + tail


def open_store(uri: str) -> Backend:
    """The backend for ``uri`` (an absolute tracking URI), one per process and URI."""
    return _open(uri, os.getpid())


def _plain_http(uri: str) -> bool:
    """An ``http://`` server with no MLflow credentials or TLS settings in the environment."""
    from backprop_lab.tracking.rest_store import MLFLOW_AUTH_ENV

    return urlparse(uri).scheme == "http" and not any(os.environ.get(v) for v in MLFLOW_AUTH_ENV)


@functools.cache
def _open(uri: str, pid: int) -> Backend:
    path = sqlite_path(uri)
    if path is not None:
        try:
            return SqliteBackend(uri, SqliteStore(path))
        except SchemaMismatch:
            pass  # another MLflow version's store: MLflow's client knows how to handle it
    if _plain_http(uri):
        from backprop_lab.tracking.rest_store import RestBackend

        return RestBackend(uri, requests_in_flight=HTTP_REQUESTS_IN_FLIGHT,
                           block_route=BLOCK_ROUTE, max_params=MAX_PARAMS_PER_BATCH)
    return MlflowBackend(uri)
