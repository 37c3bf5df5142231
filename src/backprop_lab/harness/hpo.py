"""Hyper-parameter search with Optuna: the sweeper behind ``hydra/sweeper=optuna``.

    python train.py -m hydra/sweeper=optuna 'optimizer.lr=tag(log,interval(0.001,3))'
    python train.py -m experiment=tuned_vanishing_gradients   # one study per activation x depth

The search space is Hydra's sweep syntax (``interval``, ``tag(log, ...)``, ``int(interval(...))``,
``choice``, ``range``, ``a,b,c``), from ``hydra.sweeper.params`` and the command line. Keys of
``hydra.sweeper.grid`` are not searched: every combination of their values gets a study of its
own (``n_trials`` trials each), so a comparison of activations can give each its own best
learning rate. Every trial is an ordinary job of the project (one MLflow run, a child of the
sweep's parent run); its result is the job's summary, whose ``objective`` value Optuna gets.
A trial that diverges or fails is told to Optuna as FAIL; with a ``pruner`` the job reports its
per-epoch objective to the study and stops when the pruner says so (outcome ``pruned``, run
KILLED). Studies live in a journal file beside the store (``optuna-studies.journal``); running
the same command again continues each study up to ``n_trials`` (trials an interrupted sweep left
running count as FAIL and are not counted).

Optuna is imported here only when a sweep runs (the launching process and each trial's job).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from backprop_lab.contract import OPTUNA_STORAGE_ENV, OPTUNA_STUDY_ENV, OPTUNA_TRIAL_ENV

#: The job's link to its trial, passed per job through ``hydra.job.env_set``.
ENV_STORAGE, ENV_STUDY_ID, ENV_TRIAL_ID = OPTUNA_STORAGE_ENV, OPTUNA_STUDY_ENV, OPTUNA_TRIAL_ENV
#: Objectives: a final metric of the job's summary (summary key: the name with "_" for "/").
OBJECTIVES = ("val/loss", "val/accuracy", "train/loss", "train/accuracy")
DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median", "hyperband")
#: Outcomes of a trial that are results of the search, not errors of the sweep.
EXPECTED_OUTCOMES = ("finished", "pruned", "diverged")

#: How many trials this process's sweeper launched so far (read once by the end-of-sweep check
#: in harness/callbacks.py, in the same process: see :func:`take_launched`).
_launched = [0]


def take_launched() -> int:
    """The number of trials the sweeper launched, reset to 0 for the next sweep."""
    n, _launched[0] = _launched[0], 0
    return n


class SweepConfigError(ValueError):
    """A value of ``hydra.sweeper`` that cannot work; the message names it and the choices."""


@dataclass
class SweeperSettings:
    """``hydra.sweeper`` (conf/hydra/sweeper/optuna.yaml), checked."""

    objective: str = "val/loss"
    direction: str | None = None  # None: from the objective's name
    n_trials: int = 20  # per study
    n_jobs: int = 2  # trials of one study asked (and launched) at a time
    sampler: str = "tpe"
    seed: int | None = 0
    pruner: str = "none"
    report_every: int = 10  # epochs between the reports a pruner sees
    warmup_epochs: int = 50  # no pruning before this epoch
    storage: str | None = None  # None: beside a SQLite store (or in the working directory)
    study_name: str | None = None  # None: the experiment's name, else "sweep"
    params: dict[str, str] = field(default_factory=dict)
    grid: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, sweeper: DictConfig) -> SweeperSettings:
        raw = OmegaConf.to_container(sweeper, resolve=True)
        raw.pop("_target_", None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SweepConfigError(f"hydra.sweeper: unknown key(s) {', '.join(unknown)}; "
                                   f"valid keys: {', '.join(sorted(known))}")
        settings = cls(**{k: v for k, v in raw.items() if v is not None or k in (
            "direction", "seed", "storage", "study_name")})
        settings.params = {str(k): str(v) for k, v in (settings.params or {}).items()}
        settings.grid = {str(k): str(v) for k, v in (settings.grid or {}).items()}
        settings.check()
        return settings

    def check(self) -> None:
        """Raise SweepConfigError naming every bad value and its valid choices."""
        errors = []
        if self.objective not in OBJECTIVES:
            errors.append(f"objective={self.objective}: must be one of {', '.join(OBJECTIVES)}")
        if self.direction is not None and self.direction not in DIRECTIONS:
            errors.append(f"direction={self.direction}: must be one of {', '.join(DIRECTIONS)}"
                          " (or null: from the objective's name)")
        for key, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs),
                           ("report_every", self.report_every)):
            if not isinstance(value, int) or value < 1:
                errors.append(f"{key}={value}: must be a positive integer")
        if self.sampler not in SAMPLERS:
            errors.append(f"sampler={self.sampler}: must be one of {', '.join(SAMPLERS)}")
        if str(self.pruner) not in PRUNERS:
            errors.append(f"pruner={self.pruner}: must be one of {', '.join(PRUNERS)}")
        if errors:
            raise SweepConfigError("hydra.sweeper: " + "; ".join(errors))

    @property
    def study_direction(self) -> str:
        if self.direction is not None:
            return self.direction
        return "maximize" if self.objective.endswith("accuracy") else "minimize"

    @property
    def summary_key(self) -> str:
        return self.objective.replace("/", "_")


# -- the search space ----------------------------------------------------------------------------
@dataclass
class SearchSpace:
    """What a sweep runs: fixed overrides, searched keys (Optuna distributions), grid keys."""

    fixed: list[str]
    searched: dict[str, Any]  # key -> optuna distribution
    grid: dict[str, list[str]]  # key -> values (override text), one study per combination

    def combinations(self) -> list[list[str]]:
        """The grid's combinations as override lists (one empty list without a grid)."""
        keys = list(self.grid)
        return [[f"{k}={v}" for k, v in zip(keys, values)]
                for values in itertools.product(*(self.grid[k] for k in keys))]

    def corners(self) -> list[list[str]]:
        """Jobs that together use every bound and choice of the space: checked before a run."""
        ends = {key: _ends(dist) for key, dist in self.searched.items()}
        width = max([1, *map(len, ends.values())])
        jobs = []
        for combo in self.combinations():
            for i in range(width):
                jobs.append(self.fixed + combo + [f"{k}={_text(v[min(i, len(v) - 1)])}"
                                                  for k, v in ends.items()])
        return jobs


def _text(value: Any) -> str:
    """A value as Hydra's override grammar reads it back."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _ends(distribution: Any) -> list[Any]:
    import optuna

    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def _distribution(key: str, sweep: Any) -> Any:
    """The Optuna distribution of one of Hydra's sweep values."""
    import optuna
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    d = optuna.distributions
    if isinstance(sweep, IntervalSweep):
        log = "log" in sweep.tags
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return d.IntDistribution(sweep.start, sweep.end, log=log)
        return d.FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    if isinstance(sweep, RangeSweep):
        return d.CategoricalDistribution(list(sweep.range()))
    if isinstance(sweep, ChoiceSweep):
        return d.CategoricalDistribution([_text(v) if not isinstance(v, int | float) else v
                                          for v in sweep.list])
    raise SweepConfigError(f"{key}: cannot search {sweep!r}; use interval(a,b), "
                           "tag(log,interval(a,b)), int(interval(a,b)), choice(...), range(...)")


def search_space(settings: SweeperSettings, arguments: Sequence[str]) -> SearchSpace:
    """The sweep's space from ``hydra.sweeper.params``, ``hydra.sweeper.grid`` and the command
    line (which wins over both). Raises SweepConfigError naming a key that cannot be searched."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    grid_text = dict(settings.grid)
    searched: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    from_config = parser.parse_overrides([f"{k}={v}" for k, v in settings.params.items()])
    # The command line comes last: it wins over hydra.sweeper.params and .grid.
    for override in [*from_config, *parser.parse_overrides(list(arguments))]:
        key = override.get_key_element()
        searched.pop(key, None)
        fixed.pop(key, None)
        grid_text.pop(key, None)
        if override.is_sweep_override():
            searched[key] = _distribution(key, override.value())
        else:
            fixed[key] = override.input_line
    grid = {}
    for override in parser.parse_overrides([f"{k}={v}" for k, v in grid_text.items()]):
        key = override.get_key_element()
        value = override.value()
        values = list(value.list) if override.is_sweep_override() and hasattr(value, "list") \
            else [value]
        if override.is_sweep_override() and not hasattr(value, "list"):
            raise SweepConfigError(f"hydra.sweeper.grid.{key}: a grid takes a list of values "
                                   f"(a,b,c or choice(...)); got {override.input_line}")
        grid[key] = [_text(v) for v in values]
    if not searched:
        raise SweepConfigError(
            "the Optuna sweeper has nothing to search: give a key a range, e.g. "
            "'optimizer.lr=tag(log,interval(0.001,1.0))', on the command line or in "
            "hydra.sweeper.params")
    return SearchSpace(list(fixed.values()), searched, grid)


def settings_and_space(config: DictConfig) -> tuple[SweeperSettings, SearchSpace]:
    """Both, from a composed multirun config (its command line included)."""
    settings = SweeperSettings.from_config(config.hydra.sweeper)
    space = search_space(settings, list(config.hydra.overrides.task))
    return settings, space


def swept_keys(space: SearchSpace) -> list[str]:
    """The keys a run's name shows: the grid's, then the searched ones."""
    return [*space.grid, *space.searched]


# -- storage -------------------------------------------------------------------------------------
def storage_path(settings: SweeperSettings, tracking_uri: str | None, base_dir: str) -> Path:
    """The study journal: ``hydra.sweeper.storage``, else beside a SQLite store, else in the
    directory the command was started from."""
    from backprop_lab.contract import STUDIES_FILE
    from backprop_lab.tracking import sqlite_path

    if settings.storage:
        return (Path(base_dir) / settings.storage).resolve()
    db = sqlite_path(tracking_uri) if tracking_uri else None
    return (db.parent if db is not None else Path(base_dir)) / STUDIES_FILE


def open_storage(path: Path) -> Any:
    """Optuna's journal storage in a file (safe for several processes)."""
    import optuna

    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def make_pruner(settings: SweeperSettings) -> Any:
    import optuna

    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3,
                                           n_warmup_steps=settings.warmup_epochs)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, settings.warmup_epochs))
    return optuna.pruners.NopPruner()


def make_sampler(settings: SweeperSettings, index: int) -> Any:
    import optuna

    seed = None if settings.seed is None else settings.seed + index
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, settings.n_trials))


# -- the sweep -----------------------------------------------------------------------------------
@dataclass
class Study:
    """One study of a sweep (one combination of the grid) and its trials still to run."""

    label: str  # the grid's values, e.g. "activation=relu model.depth=10" ("" without a grid)
    combo: list[str]
    study: Any
    remaining: int
    study_id: int  # in the storage: how a job finds its study


def trial_outcome(ret: Any) -> tuple[str, str | None, dict | None]:
    """(outcome, reason, summary) of a launched job (a job that raised is ``failed``)."""
    from hydra.core.utils import JobStatus

    if ret.status != JobStatus.COMPLETED:
        exc = ret._return_value  # the exception; .return_value would re-raise it
        return "failed", f"{type(exc).__name__}: {exc}", None
    summary = ret.return_value if isinstance(ret.return_value, dict) else {}
    return summary.get("outcome", "failed"), summary.get("failure_reason"), summary


def run_sweep(launcher: Any, config: DictConfig, arguments: Sequence[str]) -> list[dict]:
    """Run every study to its budget through ``launcher``; return one row per study's best."""
    import optuna
    from optuna.trial import TrialState

    from backprop_lab import tracking
    from backprop_lab.harness.sweep_configs import task_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings, space = settings_and_space(config)
    cfg = task_config(config)
    cwd = config.hydra.runtime.cwd
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, cwd) if cfg.tracking.enabled else None
    path = storage_path(settings, uri, cwd)
    storage = open_storage(path)
    base = settings.study_name or config.hydra.runtime.choices.get("experiment") or "sweep"
    studies = []
    for index, combo in enumerate(space.combinations()):
        label = " ".join(combo)
        study = optuna.create_study(
            study_name=f"{base} {label}".strip(), storage=storage, load_if_exists=True,
            direction=settings.study_direction, sampler=make_sampler(settings, index),
            pruner=make_pruner(settings))
        done = 0
        for trial in study.get_trials(deepcopy=False):
            if trial.state == TrialState.RUNNING:  # left by an interrupted sweep
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
                    trial.state == TrialState.FAIL and "outcome" in trial.user_attrs):
                done += 1
        studies.append(Study(label, combo, study, max(0, settings.n_trials - done),
                             storage.get_study_id_from_name(study.study_name)))
    total = sum(s.remaining for s in studies)
    print(f"Optuna: {len(studies)} stud{'y' if len(studies) == 1 else 'ies'} in {path}, "
          f"{total} trial(s) to run ({settings.n_trials} per study, objective "
          f"{settings.objective}, {settings.study_direction})", flush=True)

    job_idx = 0
    storage_override = f"++hydra.job.env_set.{ENV_STORAGE}='{path}'"
    while any(s.remaining for s in studies):
        batch = []
        for s in studies:
            for _ in range(min(settings.n_jobs, s.remaining)):
                trial = s.study.ask(space.searched)
                s.remaining -= 1
                overrides = [*space.fixed, *s.combo,
                             *(f"{k}={_text(v)}" for k, v in trial.params.items()),
                             storage_override,
                             f"++hydra.job.env_set.{ENV_STUDY_ID}={s.study_id}",
                             f"++hydra.job.env_set.{ENV_TRIAL_ID}={trial._trial_id}"]
                batch.append((s, trial, overrides))
        returns = launcher.launch([o for _, _, o in batch], initial_job_idx=job_idx)
        job_idx += len(batch)
        _launched[0] = job_idx
        for (s, trial, _), ret in zip(batch, returns, strict=True):
            _tell(s.study, trial, ret, settings)
    return best_rows(studies, settings, path)


def _tell(study: Any, trial: Any, ret: Any, settings: SweeperSettings) -> None:
    """Report a finished job to its study: its objective, PRUNED, or FAIL with the reason."""
    from optuna.trial import TrialState

    outcome, reason, summary = trial_outcome(ret)
    trial.set_user_attr("outcome", outcome)
    if summary:
        for key in ("run_id", "run_name"):
            if summary.get(key):
                trial.set_user_attr(key, summary[key])
    if reason:
        trial.set_user_attr("reason", str(reason)[:500])
    value = (summary or {}).get(settings.summary_key)
    if outcome == "finished" and value is not None and math.isfinite(value):
        study.tell(trial, value)
    elif outcome == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)


def best_rows(studies: list[Study], settings: SweeperSettings, path: Path) -> list[dict]:
    """Per study: its best trial's parameters, value, run, and the trials by state."""
    from optuna.trial import TrialState

    rows = []
    for s in studies:
        trials = s.study.get_trials(deepcopy=False)
        counts = {state.name.lower(): sum(t.state == state for t in trials)
                  for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        row: dict[str, Any] = {"study": s.study.study_name,
                               **dict(_split(o) for o in s.combo)}
        if complete:
            best = s.study.best_trial
            row |= {**best.params, settings.objective: best.value, "best_trial": best.number,
                    "best_run_name": best.user_attrs.get("run_name"),
                    "best_run_id": best.user_attrs.get("run_id")}
        row |= {f"n_{k}": v for k, v in counts.items()}
        rows.append(row)
    return rows


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


def record_on_parent(rows: list[dict], settings: SweeperSettings, sweep_dir: Path,
                     uri: str | None, parent_run_id: str | None, storage: Path) -> None:
    """best_trials.csv in the sweep folder; on the parent run: the table as an artifact, each
    study's best parameters as params (``best.<grid values>.<key>``) and value as a metric."""
    import csv
    import time

    import numpy as np

    sweep_dir.mkdir(parents=True, exist_ok=True)
    table = sweep_dir / "best_trials.csv"
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    if not (uri and parent_run_id):
        return
    from backprop_lab.contract import STUDY_TAG
    from backprop_lab.tracking import ArtifactSpec, open_store

    store = open_store(uri)
    tags = {STUDY_TAG: ", ".join(r["study"] for r in rows)[:5000],
            "backprop_lab.optuna.storage": str(storage),
            "backprop_lab.optuna.objective": f"{settings.objective} ({settings.study_direction})"}
    names, values = [], []
    for row in rows:
        label = ".".join(str(row[k]) for k in settings.grid if k in row)
        prefix = f"best.{label}." if label else "best."
        if settings.objective in row:
            names.append(f"best/{settings.objective}" + (f"/{label}" if label else ""))
            values.append(row[settings.objective])
        for key, value in row.items():
            if key not in ("study", settings.objective, "best_run_id", "n_complete",
                           "n_pruned", "n_fail") and key not in settings.grid:
                tags[f"{prefix}{key.removeprefix('best_')}"] = value
    store.set_tags(parent_run_id, tags)
    if names:
        now = int(time.time() * 1000)
        store.log_metrics(parent_run_id, names, np.array([0]),
                          np.array(values, dtype=float).reshape(-1, 1), np.array([now]))
    store.log_artifacts(parent_run_id, [ArtifactSpec(table)])
    store.flush()


def print_best(rows: list[dict], settings: SweeperSettings) -> None:
    """The best trial of each study, one line each."""
    print(f"\nBest trials ({settings.objective}, {settings.study_direction}):")
    for row in rows:
        if settings.objective not in row:
            print(f"  {row['study']}: no trial finished")
            continue
        params = " ".join(f"{k}={_short(v)}" for k, v in row.items()
                          if k not in ("study", settings.objective, "best_trial",
                                       "best_run_name", "best_run_id", "n_complete", "n_pruned",
                                       "n_fail") and k not in settings.grid)
        print(f"  {row['study']}: {params} -> {row[settings.objective]:.4g} "
              f"(trial {row['best_trial']}, {row.get('best_run_name')}; "
              f"{row['n_complete']} complete, {row['n_pruned']} pruned, {row['n_fail']} failed)")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def job_trial() -> tuple[Path, int, int] | None:
    """(study journal, study id, trial id) when this job is a trial of an Optuna sweep."""
    found = [os.environ.get(v) for v in (ENV_STORAGE, ENV_STUDY_ID, ENV_TRIAL_ID)]
    if not all(found):
        return None
    return Path(found[0]), int(found[1]), int(found[2])
