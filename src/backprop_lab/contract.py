"""The names every part of backprop-lab agrees on, each defined once; no heavy imports.

Training writes these, tracking stores them, analysis, scripts and benchmarks read them back:

- where the project lives (``REPO_ROOT``, moved by ``$BACKPROP_LAB_ROOT``) and its default MLflow
  store (``sqlite:///<root>/mlflow.db``, unless ``$MLFLOW_TRACKING_URI`` says otherwise);
- the run tags of the harness (``backprop_lab.role`` and the rest);
- the per-run files (``history.csv``, ``summary.json``, ...);
- the telemetry defaults: MLflow and Ray send usage data unless told not to.
"""

from __future__ import annotations

import os
from pathlib import Path

# -- where things are -----------------------------------------------------------------------------
ROOT_ENV = "BACKPROP_LAB_ROOT"
#: The repository (conf/, experiments/, the default store). src/backprop_lab/contract.py ->
#: the repository root, unless $BACKPROP_LAB_ROOT points elsewhere.
REPO_ROOT = Path(os.environ.get(ROOT_ENV) or Path(__file__).resolve().parents[2])
CONF_DIR = REPO_ROOT / "conf"
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
STORE_FILE = "mlflow.db"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else the project's store ``sqlite:///<root>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / STORE_FILE}"


# -- run tags -------------------------------------------------------------------------------------
ROLE_TAG = "backprop_lab.role"  # "sweep" (a parent run) or "job"
OUTCOME_TAG = "backprop_lab.outcome"  # finished | diverged | failed | killed | pruned
REASON_TAG = "backprop_lab.failure_reason"
OUTPUT_DIR_TAG = "backprop_lab.output_dir"  # the job's Hydra folder
N_JOBS_TAG = "backprop_lab.n_jobs"
SWEPT_KEYS_TAG = "backprop_lab.swept_keys"
PARENT_TAG = "mlflow.parentRunId"
#: "<host> <pid> <process start>" of the process that writes the run (tracking/orphans.py)
PROCESS_TAG = "backprop_lab.process"
#: milliseconds since the epoch, refreshed while the run's process lives (tracking/heartbeat.py)
HEARTBEAT_TAG = "backprop_lab.heartbeat"
#: outcome -> MLflow run status
STATUS = {"finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "killed": "KILLED",
          "pruned": "KILLED"}  # pruned: stopped early by the hyper-parameter search
#: The Optuna study a trial belongs to (on the sweep's parent and on every trial's run).
STUDY_TAG = "backprop_lab.optuna.study"
TRIAL_TAG = "backprop_lab.optuna.trial"  # the trial's number in its study
#: Environment variables the Optuna sweeper (harness/hpo.py) sets for each trial's job: the
#: study journal, the study's id and the trial's id.
OPTUNA_STORAGE_ENV = "BACKPROP_LAB_OPTUNA_STORAGE"
OPTUNA_STUDY_ENV = "BACKPROP_LAB_OPTUNA_STUDY_ID"
OPTUNA_TRIAL_ENV = "BACKPROP_LAB_OPTUNA_TRIAL_ID"
#: Where the sweeper keeps its studies unless told otherwise: beside a SQLite store.
STUDIES_FILE = "optuna-studies.journal"

# -- a job's files (its Hydra folder; all but the summary are also the run's artifacts) -----------
HISTORY_FILE = "history.csv"  # every metric of every epoch
SUMMARY_FILE = "summary.json"  # the job's one-line summary, read by the sweep's table
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.npz"
HISTOGRAMS_FILE = "histograms.npz"
JACOBIAN_FILE = "jacobian.npz"  # the Jacobian spectra (engine/jacobian.py), with jacobian_probes
FIGURES_DIR = "figures"
# The interactive gradient-flow page (analysis/gradient_flow.py) and a job's data for it.
GRADIENT_FLOW_PAGE = "gradient_flow.html"
FLOW_RECORD_FILE = "gradient_flow.json"

# -- privacy --------------------------------------------------------------------------------------
#: Set (unless the user set them) before MLflow, Ray or a server they start is imported.
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                 "RAY_USAGE_STATS_ENABLED": "0"}


def telemetry_off() -> None:
    """Turn MLflow's and Ray's usage reporting off in this process (and what it starts), unless
    the environment already says otherwise."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)
