"""The Hydra callback that runs in the launching process, around all jobs.

- ``on_run_start`` / ``on_multirun_start``: compose and check every job's config (a bad value
  exits non-zero here, before any MLflow run exists), then create and migrate the MLflow store
  and the experiment once (parallel workers migrating a new SQLite file at once crash), and for a
  multirun open the sweep's parent run and hand its id to the jobs.
- ``on_multirun_end``: a table of the sweep's runs, the command that opens the MLflow UI, the
  parent run's outcome, and a non-zero exit status if any job failed or diverged.

Hydra turns exceptions raised in callbacks into warnings, so failures here exit explicitly
(SystemExit) after printing the reason.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from backprop_lab.contract import N_JOBS_TAG, ROLE_TAG, SWEPT_KEYS_TAG
from backprop_lab.harness import stopping
from backprop_lab.harness.job_context import (
    ENV_LAUNCHER_PID,
    ENV_PARENT_RUN_ID,
    ENV_SWEEP_ID,
    ENV_SWEPT_KEYS,
    GROUPS,
    split_override,
    sweep_name,
)
from backprop_lab.harness.sweep_configs import task_config


def _fail(message: str) -> None:
    from backprop_lab.tracking.secrets import mask

    sys.stderr.write(f"Error: {mask(message)}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def _describe(exc: BaseException) -> str:
    """Hydra's message for a composition error, with OmegaConf's cause (as Hydra prints it)."""
    text = str(exc)
    cause = exc.__cause__
    if cause is not None and str(cause) not in text:
        text += f"\n{cause}"
    return text


def sweep_jobs(config: DictConfig) -> tuple[list[list[str]], list[str]] | None:
    """(every job's overrides, swept keys) as the basic sweeper will expand them.

    None for other sweepers (their jobs are only known while they run).
    """
    # Private: Hydra has no public API that expands a sweep into its jobs before it launches
    # them; BasicSweeper.split_arguments is what the basic sweeper itself uses.
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()]
    arguments += list(config.hydra.overrides.task)
    loader = GlobalHydra.instance().hydra.config_loader
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(overrides, None)
    jobs = [list(job) for batch in batches for job in batch]
    # Swept = takes more than one value across the jobs (a command-line `seed=0` replaces a
    # sweep of seeds in the experiment's hydra.sweeper.params).
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job:
            key, value = split_override(override)
            values.setdefault(key, set()).add(value)
    swept = [key for key, seen in values.items() if len(seen) > 1]
    return jobs, swept


def is_search(config: DictConfig) -> bool:
    """Is the sweeper the project's Optuna sweeper (conf/hydra/sweeper/optuna.yaml)?"""
    return str(config.hydra.sweeper.get("_target_", "")).endswith("BackpropLabOptunaSweeper")


def job_configs(config: DictConfig, jobs: list[list[str]]) -> list[DictConfig]:
    """Every job's task config, as Hydra will compose it, composing as little as possible.

    The compositions are shared with Hydra's sweeper and launcher for the rest of the sweep
    (harness/sweep_configs.py): a sweep over plain values composes once, a sweep over config
    groups once per distinct choice. Exits non-zero naming the job and the bad value if an
    override does not fit the schema.
    """
    from hydra.core.global_hydra import GlobalHydra

    from backprop_lab.harness.sweep_configs import SweepComposer

    composer = SweepComposer.install(GlobalHydra.instance().hydra.config_loader)
    configs = []
    for num, overrides in enumerate(jobs):
        try:
            configs.append(task_config(composer.load_sweep_config(config, overrides)))
        except Exception as exc:  # Hydra's composition errors, OmegaConf's type and key errors
            _fail(f"job {num} ({' '.join(overrides)}): {_describe(exc)}")
    return configs


def check_job(cfg: DictConfig, label: str = "") -> None:
    """Exit non-zero, naming the bad value, if the job's data set, network or optimizer cannot
    be built from ``cfg``."""
    from backprop_lab.harness.build import build
    from backprop_lab.harness.config import ConfigError

    try:
        build(cfg)
    except (ConfigError, ValueError) as exc:
        _fail(f"{label}Invalid config: {exc}")


#: The heartbeat of each parent run this process writes, by run id: kept out of the callback,
#: which Hydra pickles into every joblib or Ray job.
_HEARTBEATS: dict[str, Any] = {}


#: The gradient-flow page worker of each sweep this process runs, by sweep id
#: (harness/page_worker.py); outside the callback for the same reason.
_PAGE_WORKERS: dict[str, Any] = {}


def _close_page_worker(sweep_id: str | None) -> None:
    worker = _PAGE_WORKERS.pop(sweep_id, None) if sweep_id else None
    if worker is not None:
        worker.close()


def _stop_heartbeat(run_id: str) -> None:
    heartbeat = _HEARTBEATS.pop(run_id, None)
    if heartbeat is not None:
        heartbeat.stop()


class TrackingCallback(Callback):
    """See the module docstring. Registered in conf/config.yaml under ``hydra.callbacks``."""

    def __init__(self) -> None:
        self.uri: str | None = None
        self.parent_run_id: str | None = None
        self.sweep_id: str | None = None
        self.n_jobs = 0
        self.search = False  # an Optuna search (harness/hpo.py), not a grid
        self.experiment_id: str | None = None
        self.swept: list[str] = []
        self.title = "sweep"
        self.page_seconds: float | None = None  # waited for the gradient-flow page at the end

    # -- single run -------------------------------------------------------------------------
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[ENV_LAUNCHER_PID] = str(os.getpid())
        cfg = task_config(config)
        check_job(cfg)
        if cfg.get("resume") is not None:
            _fail(f"resume={cfg.resume} is for grid sweeps: add -m (a single run has nothing "
                  "to resume)")
        self._preflight(config, cfg)
        if cfg.tracking.enabled:
            self._prepare_store(cfg, config.hydra.runtime.cwd)

    # -- multirun ---------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[ENV_LAUNCHER_PID] = str(os.getpid())
        # The launching process never raises on a signal: it stops starting jobs, passes the
        # signal on to the jobs running, and ends the sweep with its table (stopping.py).
        stopping.install(raising=False)
        expanded = sweep_jobs(config)
        self.search = is_search(config)
        if self.search:  # the bounds and choices of an Optuna search, per study
            from backprop_lab.harness import hpo

            try:
                _, space = hpo.settings_and_space(config)
            except hpo.SweepConfigError as exc:
                _fail(str(exc))
            jobs, swept = space.corners(), hpo.swept_keys(space)
            job_cfgs = job_configs(config, jobs)
        elif expanded is None:
            jobs, swept = [], []
            job_cfgs = [task_config(config)]
        else:
            jobs, swept = expanded
            job_cfgs = job_configs(config, jobs)
        for num, cfg in enumerate(job_cfgs):
            check_job(cfg, f"job {num} ({' '.join(jobs[num])}): " if jobs else "")
        self._preflight(config, job_cfgs[0])
        from backprop_lab.harness.sweep_folder import SweepFolderError, prepare_sweep_folder

        try:  # before the parent run exists: a folder that cannot be made is one line
            prepare_sweep_folder(Path(config.hydra.sweep.dir))
        except SweepFolderError as exc:
            _fail(str(exc))
        resume_value = job_cfgs[0].get("resume")
        if resume_value is not None and (self.search or expanded is None):
            _fail(f"resume={resume_value} is for grid sweeps (the basic sweeper); an Optuna "
                  "search resumes through its study")
        self.n_jobs = 0 if self.search else len(jobs)  # a search's trials: known as it runs
        self.sweep_id = uuid.uuid4().hex
        os.environ[ENV_SWEEP_ID] = self.sweep_id
        sweep_dir, sweep_id = Path(config.hydra.sweep.dir), self.sweep_id
        stopping.on_stop(lambda name: stopping.request_sweep_stop(sweep_dir, sweep_id, name))
        if str(config.hydra.launcher.get("_target_", "")).endswith("JoblibLauncher"):
            stopping.on_stop(stopping.forward_to_workers)
        if stopping.received():  # a signal while the jobs were checked
            stopping.request_sweep_stop(sweep_dir, sweep_id, stopping.received())
        os.environ[ENV_SWEPT_KEYS] = json.dumps(swept)
        print(f"Sweep of {self.n_jobs or 'an unknown number of'} jobs"
              + (f" over {', '.join(swept)}" if swept else ""), flush=True)

        first = job_cfgs[0]
        if not first.tracking.enabled:
            return
        from backprop_lab import tracking

        experiment_id = self._prepare_store(first, config.hydra.runtime.cwd)
        if resume_value is not None:
            self._resume(config, experiment_id, resume_value, jobs)
            return
        choices = config.hydra.runtime.choices
        experiment = choices.get("experiment")
        cli = list(config.hydra.overrides.task)
        name = sweep_name(experiment, cli, swept, datetime.now())
        tags = {
            ROLE_TAG: "sweep",
            "hydra.overrides": " ".join(cli),
            N_JOBS_TAG: str(self.n_jobs),
            SWEPT_KEYS_TAG: ",".join(swept),
            "backprop_lab.sweep_dir": str(Path(config.hydra.sweep.dir).resolve()),
            **{f"choice.{k}": str(v) for k, v in choices.items() if k in GROUPS and v},
            **tracking.git_tags(),
        }
        if jobs and not self.search:  # what a later resume=... compares (harness/resume.py)
            from backprop_lab.harness import resume

            keys = [resume.job_key(job) for job in jobs]
            tags |= resume.parent_tags(keys)
        self.parent_run_id = tracking.create_run(self.uri, experiment_id, name[:250], tags=tags)
        if jobs and not self.search:
            resume.write_sweep_file(Path(config.hydra.sweep.dir), self.parent_run_id, keys)
        # A search's trials are not one study to compare; log_artifacts=false logs no files.
        if not self.search and first.tracking.log_artifacts:
            from backprop_lab.harness.page_worker import PageWorker

            _PAGE_WORKERS[self.sweep_id] = PageWorker()
        _HEARTBEATS[self.parent_run_id] = tracking.start_heartbeat(self.uri, self.parent_run_id)
        self.experiment_id, self.swept, self.title = experiment_id, swept, name[:250]
        os.environ[ENV_PARENT_RUN_ID] = self.parent_run_id
        atexit.register(self._end_parent_if_open)
        print(f"MLflow parent run {self.parent_run_id} ({name}) in {self.uri}", flush=True)

    def _resume(self, config: DictConfig, experiment_id: str, value: str,
                jobs: list[list[str]]) -> None:
        """Reopen the earlier sweep's parent run; its done jobs are skipped (resume.py)."""
        from backprop_lab import tracking
        from backprop_lab.harness import resume

        try:
            plan = resume.plan(self.uri, experiment_id, value, jobs,
                               Path(config.hydra.runtime.cwd))
        except resume.ResumeError as exc:
            _fail(str(exc))
        resume.reopen(self.uri, plan.parent_run_id)
        self.parent_run_id = plan.parent_run_id
        resume.write_sweep_file(Path(config.hydra.sweep.dir), plan.parent_run_id,
                                [resume.job_key(job) for job in jobs], resumed=True)
        _HEARTBEATS[self.parent_run_id] = tracking.start_heartbeat(self.uri, self.parent_run_id)
        self.experiment_id, self.title = experiment_id, plan.parent_name
        os.environ[ENV_PARENT_RUN_ID] = self.parent_run_id
        os.environ[resume.ENV_DONE] = json.dumps(plan.done)
        atexit.register(self._end_parent_if_open)
        print("\n".join(plan.lines()), flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from backprop_lab.harness.progress import runs_table

        summaries = collect_summaries(Path(config.hydra.sweep.dir), self.sweep_id)
        # In a search, pruned and diverged trials are results (Optuna has them), not failures.
        expected = ("finished", "pruned", "diverged") if self.search else ("finished",)
        failed = [s for s in summaries if s["outcome"] not in expected]
        if self.search:
            from backprop_lab.harness.hpo import take_launched

            self.n_jobs = take_launched()
        missing = max(0, self.n_jobs - len(summaries))
        print()
        if summaries:
            print(runs_table(summaries))
        if self.uri:
            from backprop_lab.tracking import ui_command, ui_pages

            print(f"\nMLflow store: {self.uri}\nOpen the UI:  {ui_command(self.uri)}")
            if self.parent_run_id and self.experiment_id:
                for label, page in ui_pages(self.uri, self.experiment_id, self.parent_run_id):
                    print(f"{label:<13} {page}")
        if config.get("figures") is None and summaries:  # sweeps render figures on demand
            example = summaries[0].get("run_id") or "<job folder>"
            print(f"Figures:      python -m backprop_lab.harness.run_figures {example}")
        problems = len(failed) + missing
        sweep_dir = Path(config.hydra.sweep.dir)
        signame = stopping.received()
        if summaries:
            write_runs_csv(summaries, sweep_dir / "runs.csv")
        from backprop_lab.tracking.secrets import mask_file

        for name in ("runs.csv", "multirun.yaml"):  # logged on the parent: no credentials
            mask_file(sweep_dir / name)
        if self.parent_run_id:
            from backprop_lab.tracking import ArtifactSpec, end_run, open_store

            store = open_store(self.uri)
            extra = self._gradient_flow(store, sweep_dir) + self._report(config, sweep_dir)
            # The sweep's result as the parent's description, its table and config.
            from backprop_lab.harness.sweep_summary import NOTE_TAG, description

            command = "python train.py -m " + " ".join(
                [*config.hydra.overrides.hydra, *config.hydra.overrides.task])
            store.set_tags(self.parent_run_id, {NOTE_TAG: description(
                title=self.title, command=command, summaries=summaries, swept=self.swept,
                experiment_id=self.experiment_id, sweep_dir=sweep_dir, extra=extra)})
            store.log_artifacts(
                self.parent_run_id,
                [ArtifactSpec(sweep_dir / name) for name in ("runs.csv", "multirun.yaml")])
            total = self.n_jobs or len(summaries)
            reason = f"{problems} of {total} jobs did not finish" if problems else None
            outcome = "failed" if problems else "finished"
            if signame:
                outcome, reason = "killed", f"interrupted by {signame}; {reason or 'no job lost'}"
            _stop_heartbeat(self.parent_run_id)
            timing = ({"backprop_lab.seconds.gradient_flow": f"{self.page_seconds:.3f}"}
                      if self.page_seconds is not None else {})
            end_run(self.uri, self.parent_run_id, outcome, reason,
                    extra_tags={"backprop_lab.n_failed": str(problems), **timing})
            self.parent_run_id = None
        _close_page_worker(self.sweep_id)
        if self.sweep_id:
            stopping.stop_file(sweep_dir, self.sweep_id).unlink(missing_ok=True)
        stopping.clear_callbacks()
        for key in (ENV_SWEEP_ID, ENV_PARENT_RUN_ID, ENV_SWEPT_KEYS, "BACKPROP_LAB_RESUME_DONE"):
            os.environ.pop(key, None)
        if problems:
            lines = [f"  {s['run_name']}: {s['outcome']} ({s.get('failure_reason')})"
                     for s in failed]
            if missing:
                lines.append(f"  {missing} job(s) left no result")
            sys.stderr.write(f"\n{problems} of {self.n_jobs or len(summaries)} jobs did not "
                             "finish:\n" + "\n".join(lines) + "\n")
            sys.stderr.flush()
        if signame:
            sys.stderr.write(f"Interrupted by {signame}: every job's run ended (KILLED if it "
                             "was running, not started otherwise); kept what they recorded.\n")
            sys.stderr.flush()
            raise SystemExit(stopping.Interrupted(signame).exit_status)
        if problems:
            raise SystemExit(1)

    # -- helpers ----------------------------------------------------------------------------
    def _gradient_flow(self, store, sweep_dir: Path) -> list[str]:
        """The sweep's gradient-flow page (analysis/gradient_flow.py), made of the records its
        jobs left in their folders, into <sweep>/gradient_flow.html and the parent's
        artifacts; markdown lines for the parent's description."""
        worker = _PAGE_WORKERS.pop(self.sweep_id, None)
        if worker is None:
            return []
        if stopping.received():
            worker.close()
            return []  # stopping should be quick; the command below makes it later
        from backprop_lab.tracking import ArtifactSpec

        redo = ("python -m backprop_lab.analysis.gradient_flow "
                f"--uri {self.uri} --sweep {self.parent_run_id}")
        try:
            tic = time.perf_counter()
            path = worker.build(sweep_dir, self.sweep_id, self.title)
            worker.close()
            self.page_seconds = time.perf_counter() - tic
            if path is None:  # diagnostics=false, or jobs on other machines (Ray)
                return ["", "Gradient-flow page: none (no job left its per-layer record in "
                        f"this sweep's folder); from the store: `{redo}`"]
            store.log_artifacts(self.parent_run_id, [ArtifactSpec(path)])
        except Exception as exc:  # the sweep's runs are recorded; the page can be redone
            worker.close()
            sys.stderr.write(f"warning: the sweep's gradient-flow page failed: {exc}\n"
                             f"  redo it: {redo}\n")
            return []
        return ["", f"**Gradient flow**: `{path.name}` in this run's artifacts, an interactive "
                "page of every layer of every run (profile, heat maps, histograms)."]

    def _report(self, config: DictConfig, sweep_dir: Path) -> list[str]:
        """With ``report: true``: the analysis report of the sweep (analysis/report.py) into
        <sweep>/report and the parent's artifacts; markdown lines linking its figures."""
        if not config.get("report") or not self.parent_run_id:
            return []
        from backprop_lab.analysis.report import sweep_report

        try:
            return sweep_report(self.uri, self.parent_run_id, sweep_dir / "report")
        except Exception as exc:  # the sweep's runs are recorded; the report can be redone
            sys.stderr.write(f"warning: the sweep's report failed: {exc}\n"
                             "  redo it: python -m backprop_lab.analysis.report "
                             f"--uri {self.uri} --sweep {self.parent_run_id} --out DIR\n")
            return []

    def _preflight(self, config: DictConfig, cfg: DictConfig) -> None:
        """Fail within seconds, before anything is created, when the Ray cluster or the tracking
        server the run needs is not there (MLflow's own retries take minutes to give up)."""
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if not cfg.tracking.enabled and not launcher.endswith("RayLauncher"):
            return  # nothing outside to check (and no tracking code to import)
        from backprop_lab import tracking
        from backprop_lab.harness.ray_launcher import PreflightError, preflight

        uri = None
        if cfg.tracking.enabled:
            from backprop_lab.tracking.secrets import register_uri
            from backprop_lab.tracking.uris import check_tracking_uri

            source = "tracking.uri" if cfg.tracking.uri else "MLFLOW_TRACKING_URI"
            raw = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
            register_uri(raw)
            try:
                if raw:
                    check_tracking_uri(raw, source)
            except ValueError as exc:
                _fail(str(exc))
            uri = tracking.resolve_tracking_uri(cfg.tracking.uri, config.hydra.runtime.cwd)
        try:
            preflight(config, uri)
        except PreflightError as exc:
            _fail(str(exc))

    def _prepare_store(self, cfg: DictConfig, base_dir: str) -> str:
        from backprop_lab import tracking
        from backprop_lab.tracking.orphans import repair_on_open
        from backprop_lab.tracking.store import store_problem

        self.uri = tracking.resolve_tracking_uri(cfg.tracking.uri, base_dir)
        try:
            experiment_id = tracking.ensure_experiment(self.uri, cfg.tracking.experiment,
                                                       cfg.tracking.artifact_location)
        except Exception as exc:
            _fail(f"cannot open the MLflow store {self.uri}: {store_problem(exc)}")
            raise  # unreachable; keeps type checkers quiet
        repair_on_open(tracking.open_store(self.uri), experiment_id)
        return experiment_id

    def _end_parent_if_open(self) -> None:
        """At exit after a stop signal or a crash, the sweep's parent run is KILLED (or FAILED),
        not left RUNNING."""
        _close_page_worker(self.sweep_id)
        if self.parent_run_id and self.uri:
            from backprop_lab.tracking import end_run

            _stop_heartbeat(self.parent_run_id)
            signame = stopping.received()
            outcome, reason = (("killed", f"the sweep was interrupted by {signame}") if signame
                               else ("failed", "the sweep's launching process failed"))
            try:
                end_run(self.uri, self.parent_run_id, outcome, reason)
            except Exception:  # nothing more to do at exit
                pass
            self.parent_run_id = None


def write_runs_csv(summaries: list[dict], path: Path) -> None:
    """The sweep's table, one row a job, every field of its summary.json."""
    import csv

    fields = list(dict.fromkeys(k for s in summaries for k in s))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: (" ".join(v) if isinstance(v, list) else v) for k, v in s.items()}
                         for s in summaries)


def collect_summaries(sweep_dir: Path, sweep_id: str | None) -> list[dict]:
    """The summary.json of every job of this sweep (job order), from the sweep folder."""
    from backprop_lab.contract import SUMMARY_FILE

    found = []
    for path in sweep_dir.glob(f"**/{SUMMARY_FILE}"):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if sweep_id is None or summary.get("sweep_id") == sweep_id:
            found.append(summary)
    return sorted(found, key=lambda s: s.get("job_num", 0))

