"""MLflow tracking: the store, one run per job, buffered metrics, artifacts.

Everything goes through ``MlflowClient`` (never the fluent ``mlflow.start_run``), so no "active
run" survives a job in a reused launcher worker. mlflow is imported lazily: ``tracking=none``
never pays its 1.7 s import.

Metrics are not logged value by value (3.8 ms each on SQLite): :class:`RunTracker` is a training
callback that, every ~1000 pending values, reads slices of the History's arrays and writes them
with one ``log_batch`` call (0.1 ms a value), and flushes the rest when the run ends, fails or
is interrupted.
"""

from __future__ import annotations

import os

# Off unless the user chose otherwise; set before anything imports mlflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import functools  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable, Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

import numpy as np  # noqa: E402

from backprop_lab.config import REPO_ROOT  # noqa: E402

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000

ROLE_TAG = "backprop_lab.role"
OUTCOME_TAG = "backprop_lab.outcome"
REASON_TAG = "backprop_lab.failure_reason"
PARENT_TAG = "mlflow.parentRunId"

# outcome -> MLflow run status
STATUS = {"finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "killed": "KILLED"}


def resolve_tracking_uri(uri: str | None, base_dir: str | Path | None = None) -> str:
    """The absolute tracking URI: ``uri``, else $MLFLOW_TRACKING_URI, else the repo's mlflow.db.

    Relative SQLite paths (and bare paths ending in .db) are made absolute against ``base_dir``
    (the directory the command was started from), so every job of a sweep, whatever its working
    directory, writes to the same database.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / 'mlflow.db'}"
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:":
            return f"sqlite:///{(base / path).resolve()}"
        return uri
    if not urlparse(uri).scheme and uri.endswith((".db", ".sqlite")):
        return f"sqlite:///{(base / uri).resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return Path(uri[len("sqlite:///"):])
    return None


def default_artifact_location(uri: str, configured: str | None = None) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite store, never ./mlruns of the cwd.

    Over HTTP the server decides (None). For other databases, <repo>/mlartifacts.
    """
    if configured:
        if urlparse(configured).scheme:
            return configured
        return Path(configured).resolve().as_uri()
    db = sqlite_path(uri)
    if db is not None:
        return (db.parent / "mlartifacts").as_uri()
    if urlparse(uri).scheme in ("http", "https"):
        return None
    return (REPO_ROOT / "mlartifacts").as_uri()


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store (or the address of the server)."""
    if urlparse(uri).scheme in ("http", "https"):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1"


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None) -> str:
    """Create (and for a new SQLite file, migrate) the store and the experiment; return its id.

    Run once in the launching process before any job starts: two joblib workers migrating a
    new SQLite file at once crash (FACTS.md).
    """
    from mlflow.exceptions import MlflowException

    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
    client = client_for(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=default_artifact_location(uri, artifact_location)
        )
    except MlflowException:  # created meanwhile by another process
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


@functools.cache
def git_info(repo: Path = REPO_ROOT) -> tuple[str, bool | None]:
    """(commit sha or "unknown", dirty?) of the repository, without touching its state."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", str(repo), *args],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    try:
        dirty: bool | None = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        dirty = None
    return commit, dirty


def git_tags() -> dict[str, str]:
    commit, dirty = git_info()
    tags = {"git.commit": commit, "git.dirty": str(dirty).lower()}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def _param_value(value: Any) -> str:
    return str(value)[:MAX_PARAM_VALUE]


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def create_run(
    uri: str,
    experiment_id: str,
    run_name: str,
    *,
    params: Mapping[str, Any] = (),
    tags: Mapping[str, str] = (),
    parent_run_id: str | None = None,
) -> str:
    """Create a run (a child of ``parent_run_id`` if given), log params and tags; return its id."""
    from mlflow.entities import Param

    client = client_for(uri)
    tags = {"mlflow.source.name": "train.py", "mlflow.source.type": "LOCAL", **dict(tags)}
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    tags = {k: _param_value(v) for k, v in tags.items()}
    run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    param_list = [Param(k, _param_value(v)) for k, v in dict(params).items()]
    for chunk in _chunks(param_list, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=chunk, synchronous=True)
    return run_id


def end_run(uri: str, run_id: str, outcome: str, reason: str | None = None,
            extra_tags: Mapping[str, str] = ()) -> None:
    """Tag the outcome (and the reason of a failure) and mark the run terminated."""
    from mlflow.entities import RunTag

    client = client_for(uri)
    tags = [RunTag(OUTCOME_TAG, outcome)]
    if reason:
        tags.append(RunTag(REASON_TAG, _param_value(reason)))
    tags += [RunTag(k, _param_value(v)) for k, v in dict(extra_tags).items()]
    client.log_batch(run_id, tags=tags, synchronous=True)
    client.set_terminated(run_id, status=STATUS[outcome])


@dataclass
class ArtifactSpec:
    """A local file or folder and where it goes in the run's artifacts."""

    local: Path
    artifact_path: str | None = None  # folder inside the run's artifacts; None = top level


class RunTracker:
    """Training callback that streams a History into one MLflow run in buffered batches.

    Args:
        uri: absolute tracking URI.
        run_id: the run to write to (see :func:`create_run`).
        log_every: log every n-th epoch (and always the last one) to MLflow.
        buffer_values: flush once this many values are pending (at most 1000 go in a call).
    """

    def __init__(self, uri: str, run_id: str, *, log_every: int = 1,
                 buffer_values: int = MAX_METRICS_PER_BATCH) -> None:
        self.uri = uri
        self.run_id = run_id
        self.log_every = max(1, int(log_every))
        self.buffer_values = buffer_values
        self.client = client_for(uri)
        self.history = None
        self._next_row = 0  # first history row not yet turned into pending values
        self._pending: list = []  # Metric objects built but not written yet
        self._rows_per_flush = 0
        self.values_logged = 0
        self.seconds_logging = 0.0

    # -- training callback protocol -------------------------------------------------------------
    def on_train_start(self, net, dataset, history) -> None:
        self.history = history

    def on_epoch_end(self, epoch: int, history) -> None:
        # Cheap every epoch (an int comparison); the Python objects are built only at a flush.
        if epoch + 1 - self._next_row >= self._rows_per_flush:
            if self._rows_per_flush == 0:
                self.history = history
                n_metrics = max(1, sum(1 for _ in history.metric_items()))
                self._rows_per_flush = max(1, self.buffer_values // n_metrics) * self.log_every
                if epoch + 1 - self._next_row < self._rows_per_flush:
                    return
            self.flush()

    def on_train_end(self, result) -> None:
        self.history = result.history
        self.flush(final=True)

    # -- writing --------------------------------------------------------------------------------
    def _rows(self, stop: int, final: bool) -> np.ndarray:
        rows = np.arange(self._next_row, stop)
        rows = rows[rows % self.log_every == 0]
        unsent_last = stop - 1 >= self._next_row
        if final and unsent_last and (rows.size == 0 or rows[-1] != stop - 1):
            rows = np.append(rows, stop - 1)  # the final values are the run's latest metrics
        return rows

    def flush(self, final: bool = False) -> int:
        """Send every complete history row not sent yet; return the number of values sent.

        Values are taken off the pending list only once their batch is written, and keep their
        timestamp, so a flush interrupted by Ctrl-C resumes where it stopped without duplicates.
        """
        from mlflow.entities import Metric

        if self.history is None:
            return 0
        tic = time.perf_counter()
        stop = int(self.history.n_rows)
        rows = self._rows(stop, final)
        if rows.size:
            steps = rows.tolist()
            timestamp = int(time.time() * 1000)
            self._pending += [
                Metric(name, value, timestamp, step)
                for name, values in self.history.metric_items()
                for value, step in zip(np.asarray(values)[rows].tolist(), steps, strict=True)
            ]
        self._next_row = max(self._next_row, stop)
        sent = 0
        while self._pending:
            chunk = self._pending[:MAX_METRICS_PER_BATCH]
            self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
            del self._pending[: len(chunk)]
            sent += len(chunk)
        self.values_logged += sent
        self.seconds_logging += time.perf_counter() - tic
        return sent

    def log_artifacts(self, specs: Iterable[ArtifactSpec]) -> None:
        for spec in specs:
            if spec.local.is_dir():
                self.client.log_artifacts(self.run_id, str(spec.local), spec.artifact_path)
            elif spec.local.exists():
                self.client.log_artifact(self.run_id, str(spec.local), spec.artifact_path)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk, synchronous=True)

    def end(self, outcome: str, reason: str | None = None) -> None:
        end_run(self.uri, self.run_id, outcome, reason)
