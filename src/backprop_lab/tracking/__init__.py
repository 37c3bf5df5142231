"""MLflow tracking: where the store is, one run per job, every metric of every epoch, artifacts.

- :func:`resolve_tracking_uri`, :func:`default_artifact_location`, :func:`ui_command`: where runs
  and artifacts go, and how to look at them.
- :func:`ensure_experiment`, :func:`create_run`, :func:`end_run`: runs, through
  :func:`~backprop_lab.tracking.store.open_store` (direct SQLite writes for local stores,
  MLflow's client for servers and other databases).
- :class:`~backprop_lab.tracking.run_tracker.RunTracker`: the training callback that streams a
  History into its run in blocks, and flushes what is left when the run ends, fails or is
  interrupted.

Nothing here imports mlflow unless a store needs MLflow's client: ``tracking=none`` and local
SQLite stores never pay its import.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from backprop_lab.contract import (
    OUTCOME_TAG,
    PARENT_TAG,
    REASON_TAG,
    REPO_ROOT,
    STATUS,
    default_tracking_uri,
)
from backprop_lab.tracking.heartbeat import Heartbeat, start_tags
from backprop_lab.tracking.run_tracker import RunTracker
from backprop_lab.tracking.store import (
    ArtifactSpec,
    open_store,
    sqlite_path,
)

__all__ = ["ArtifactSpec", "Heartbeat", "RunTracker", "create_run", "end_run",
           "ensure_experiment", "open_store", "resolve_tracking_uri", "sqlite_path",
           "start_heartbeat"]




def resolve_tracking_uri(uri: str | None, base_dir: str | Path | None = None) -> str:
    """The absolute tracking URI: ``uri``, else $MLFLOW_TRACKING_URI, else the repo's mlflow.db.

    Relative SQLite paths (and bare paths ending in .db) are made absolute against ``base_dir``
    (the directory the command was started from), so every job of a sweep, whatever its working
    directory, writes to the same database.
    """
    uri = uri or default_tracking_uri()
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:":
            return f"sqlite:///{(base / path).resolve()}"
        return uri
    if not urlparse(uri).scheme and uri.endswith((".db", ".sqlite")):
        return f"sqlite:///{(base / uri).resolve()}"
    return uri


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


#: The vanishing summary metric the runs table is sorted by (engine/run_summary.py).
SORT_BY_VANISHING = "vanishing/log10_ratio_init"


def ui_pages(uri: str, experiment_id: str, parent_run_id: str) -> list[tuple[str, str]]:
    """The UI's addresses of a sweep's gradient-flow page and of its runs sorted by how much
    their gradient vanished (most first), for ``mlflow ui`` on its default port or the server."""
    from urllib.parse import quote

    from backprop_lab.tracking.secrets import without_credentials

    base = uri.rstrip("/") if urlparse(uri).scheme in ("http", "https") else \
        "http://127.0.0.1:5000"
    base = without_credentials(base)
    runs = f"{base}/#/experiments/{experiment_id}/runs"
    return [("Gradient flow:", f"{runs}/{parent_run_id}/artifacts (gradient_flow.html)"),
            ("Most vanished:", f"{runs}?orderByKey={quote(f'metrics.`{SORT_BY_VANISHING}`')}"
                               "&orderByAsc=true")]


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None) -> str:
    """Create the store if it is new, and the experiment if it is new; return the experiment's id.

    Artifacts of a new experiment go beside a SQLite store (:func:`default_artifact_location`).
    Safe to call from several processes at once.
    """
    return open_store(uri).ensure_experiment(name, default_artifact_location(uri,
                                                                             artifact_location))


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


def create_run(
    uri: str,
    experiment_id: str,
    run_name: str,
    *,
    params: Mapping[str, Any] = (),
    tags: Mapping[str, str] = (),
    parent_run_id: str | None = None,
) -> str:
    """Create a RUNNING run (a child of ``parent_run_id`` if given) with its params and tags
    (and the heartbeat tags of this process: tracking/heartbeat.py); return its id."""
    tags = {"mlflow.source.name": "train.py", "mlflow.source.type": "LOCAL", **start_tags(),
            **dict(tags)}
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    return open_store(uri).create_run(experiment_id, run_name, dict(params), tags)


def end_run(uri: str, run_id: str, outcome: str, reason: str | None = None,
            extra_tags: Mapping[str, str] = ()) -> None:
    """Tag the outcome (and the reason of a failure) and mark the run terminated."""
    tags = {OUTCOME_TAG: outcome, **({REASON_TAG: reason} if reason else {}), **dict(extra_tags)}
    open_store(uri).end_run(run_id, STATUS[outcome], tags)


def start_heartbeat(uri: str, run_id: str) -> Heartbeat:
    """Refresh the run's heartbeat from a daemon thread until ``.stop()`` (before end_run)."""
    return Heartbeat(open_store(uri), run_id).start()
