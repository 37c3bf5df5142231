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
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np

from backprop_lab.tracking.mlflow_backend import HTTP_REQUESTS_IN_FLIGHT, MlflowBackend
from backprop_lab.tracking.records import MAX_PARAMS_PER_BATCH, ArtifactSpec, text
from backprop_lab.tracking.rest_store import MLFLOW_AUTH_ENV, RestBackend
from backprop_lab.tracking.sqlite_store import (
    SchemaMismatch,
    SqliteStore,
    damage_report,
    local_artifact_dir,
)

BLOCK_ROUTE = "/backprop-lab/api/log-metric-block"  # server_app.py


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
        return RestBackend(uri, requests_in_flight=HTTP_REQUESTS_IN_FLIGHT,
                           block_route=BLOCK_ROUTE, max_params=MAX_PARAMS_PER_BATCH)
    return MlflowBackend(uri)
