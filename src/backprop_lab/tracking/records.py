"""The plain records every store kind shares (the writers in store.py, sqlite_store.py,
rest_store.py and mlflow_backend.py, and the orphan check in orphans.py).

- :class:`ArtifactSpec`: a local file or folder and where it goes in a run's artifacts;
- :func:`text`: a param or tag value as MLflow accepts it, credentials masked;
- :class:`RunningRun` and :func:`running_run`: a RUNNING run with its heartbeat tags, as the
  orphan check (tracking/orphans.py) judges it.

MLflow's ``log_batch`` limits are here too (``MAX_*``). This module imports no store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backprop_lab.contract import HEARTBEAT_TAG, OUTPUT_DIR_TAG, PROCESS_TAG
from backprop_lab.tracking.secrets import mask

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000


@dataclass
class ArtifactSpec:
    """A local file or folder and where it goes in the run's artifacts."""

    local: Path
    artifact_path: str | None = None  # folder inside the run's artifacts; None = top level


def text(value: Any) -> str:
    """A param or tag value as MLflow accepts it (at most 6000 characters), credentials masked
    (tracking/secrets.py): nothing a run records holds a password or a token."""
    return mask(str(value))[:MAX_PARAM_VALUE]


@dataclass
class RunningRun:
    """A RUNNING run of a store, with its heartbeat tags."""

    run_id: str
    name: str
    experiment_id: str
    start_time: int  # ms since the epoch
    process: str | None  # the PROCESS_TAG value
    heartbeat: int | None  # ms since the epoch
    output_dir: str | None = None  # the job's folder (OUTPUT_DIR_TAG)


def running_run(run_id: str, name: str | None, experiment_id: str, start_time,
                tags: Mapping[str, str]) -> RunningRun:
    """A :class:`RunningRun` from a run's fields and tags."""
    beat = tags.get(HEARTBEAT_TAG)
    return RunningRun(run_id, name or "", str(experiment_id), int(start_time or 0),
                      tags.get(PROCESS_TAG), int(beat) if beat and beat.isdigit() else None,
                      tags.get(OUTPUT_DIR_TAG))
