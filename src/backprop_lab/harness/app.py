"""Train and track one job: the function ``train.py`` (and ``backprop-train``) calls through Hydra.

    python train.py                                   # the reference notebook's network
    python train.py -m activation=sigmoid,tanh,relu   # a sweep: one parent run, three children
    python train.py -m experiment=vanishing_gradients

One job = build the data set, network and optimizer from the composed config (bad values fail
here, before any MLflow run exists), open one MLflow run, train with a progress bar and a
buffered tracker as callbacks, save the outputs into Hydra's job folder, log them as artifacts,
end the run with its outcome. In a multirun a failing job is recorded (FAILED, with its reason)
and the sweep goes on; the Hydra callback in harness/callbacks.py turns failures into the exit
status at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING

from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from backprop_lab.contract import (
    CONF_DIR,
    OPTUNA_TRIAL_ENV,
    OUTPUT_DIR_TAG,
    ROLE_TAG,
)
from backprop_lab.harness import stopping
from backprop_lab.harness.build import Built, build, derived_params
from backprop_lab.harness.config import (
    ConfigError,
    flatten,
    register_configs,
    to_plain,
)
from backprop_lab.harness.ending import Ending, finish, job_summary, wrap_up
from backprop_lab.harness.job_context import JobContext
from backprop_lab.harness.progress import ProgressBar

if TYPE_CHECKING:
    from backprop_lab.tracking.run_tracker import RunTracker

log = logging.getLogger(__name__)


class BadConfig(CompactHydraException):
    """A config that composes but cannot be trained; Hydra prints just the message."""


class RunFailed(CompactHydraException):
    """A single run that raised or diverged (its MLflow run is already marked FAILED)."""


def train_and_track(cfg: DictConfig) -> dict:
    """Run one job (see the module docstring); returns its summary (also in summary.json).

    A stop signal (SIGINT, SIGTERM, SIGHUP: harness/stopping.py) during training ends the run
    KILLED with everything recorded so far; a single run then raises
    :class:`~backprop_lab.harness.stopping.Interrupted` carrying one line that says what was
    kept, a sweep's job returns its summary (the sweep stops starting jobs).
    """
    with stopping.handled():
        return _train_and_track(cfg)


def _stopped_before_start(ctx: JobContext) -> str | None:
    """The signal that stopped this job's sweep before the job started (None: not stopped)."""
    if not ctx.multirun:
        return None
    from hydra.core.hydra_config import HydraConfig

    sweep_dir = HydraConfig.get().sweep.dir if HydraConfig.initialized() else None
    return stopping.sweep_stopped(sweep_dir, ctx.sweep_id) or (
        stopping.received() if ctx.in_launching_process else None)


def _train_and_track(cfg: DictConfig) -> dict:
    from threadpoolctl import threadpool_limits

    from backprop_lab.engine.training import train

    ctx = JobContext.current(cfg)
    if not ctx.in_launching_process:
        stopping.reset()  # a reused worker: a previous sweep's stop is not this job's
    tic = time.perf_counter()

    def without_run(outcome: str, reason: str) -> dict:
        """The summary of a job that ends before its run exists."""
        return finish(ctx, job_summary(ctx, cfg, Ending(outcome, reason), None,
                                       time.perf_counter() - tic, None))

    _mask_hydra_files(ctx)
    signame = _stopped_before_start(ctx)
    if signame is not None:
        return without_run("killed", f"not started: the sweep was stopped by {signame}")
    if ctx.multirun:
        from backprop_lab.harness import resume

        earlier = resume.done_earlier(ctx.overrides)
        if earlier is not None:  # a resumed sweep: this job was done earlier
            summary = job_summary(ctx, cfg, Ending(earlier["outcome"]), earlier["run_id"], 0.0,
                                  None)
            summary |= {k: v for k, v in resume.skipped_summary(earlier).items()
                        if v is not None}
            summary["skipped"] = "done earlier"
            return finish(ctx, summary)
    try:
        built = build(cfg)
    except (ConfigError, ValueError) as exc:
        if not ctx.multirun:
            raise BadConfig(f"Invalid config: {exc}") from None
        return without_run("failed", f"invalid config: {exc}")

    trial = None
    if ctx.multirun and OPTUNA_TRIAL_ENV in os.environ:  # a trial of an Optuna sweep?
        from backprop_lab.harness import hpo_trial

        trial = hpo_trial.current_trial()
    tracker, heartbeat = None, None
    if cfg.tracking.enabled:
        with stopping.deferred():  # a signal here is acted on once the run exists
            try:
                tracker = _start_tracking(cfg, ctx, built,
                                          hpo_trial.trial_tags(trial[0]) if trial else {})
            except Exception as exc:
                from backprop_lab.tracking.store import store_problem

                reason = f"could not create the MLflow run: {store_problem(exc)}"
                if not ctx.multirun:
                    raise RunFailed(reason) from None
                return without_run("failed", reason)
            heartbeat = _heartbeat(tracker)
    bar = ProgressBar(cfg.epochs, ctx.run_name, enabled=cfg.progress and ctx.show_progress)
    callbacks = [bar] + ([tracker] if tracker is not None else [])
    pruning = hpo_trial.reporter(*trial) if trial else None
    if pruning is not None:
        callbacks.append(pruning)
    holder = _HistoryHolder()
    from backprop_lab.contract import HISTORY_FILE
    from backprop_lab.harness.history_log import HistoryLog

    history_log = HistoryLog(ctx.output_dir / HISTORY_FILE)
    callbacks.insert(0, history_log)  # the job's own record, before the store's
    jacobian = None
    if cfg.jacobian_probes:
        from backprop_lab.engine.jacobian import JacobianProbe

        jacobian = JacobianProbe(cfg.jacobian_probes, cfg.histogram_every)
        callbacks.append(jacobian)
    ending, result, error, interrupted = Ending("failed"), None, None, None
    setup_s = time.perf_counter() - tic  # build, tracking set-up, the job's record
    try:
        with stopping.interruptible(), threadpool_limits(limits=cfg.threads):
            result = train(built.net, built.dataset, built.optimizer, epochs=cfg.epochs,
                           batch_size=built.batch_size, callbacks=[holder, *callbacks],
                           diagnostics=cfg.diagnostics, histogram_every=cfg.histogram_every,
                           rng=built.shuffle_rng)
        ending = Ending(result.status, history=result.history, histograms=result.histograms,
                        jacobian=jacobian)
        if result.status == "diverged":
            ending.reason = f"training loss not finite at epoch {result.diverged_epoch}"
        elif result.status == "stopped":  # only the pruning callback stops training
            ending.outcome, ending.reason = "pruned", result.stop_reason
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP, or a Ray cancel
        bar.close()
        interrupted = _signal_name(exc, ctx)
        rows = holder.history.n_rows if holder.history is not None else 0
        ending = Ending("killed", f"interrupted by {interrupted} after {max(rows - 1, 0)} "
                                  "epochs", holder.history)
    except Exception as exc:  # recorded as FAILED; re-raised below for a single run
        bar.close()
        ending = Ending("failed", f"{type(exc).__name__}: {exc}", holder.history)
        error = exc
        if ctx.multirun:  # the sweep goes on: keep the traceback in the job's log
            log.error("run %s failed", ctx.run_name, exc_info=True)

    figures = cfg.figures if cfg.figures is not None else not ctx.multirun
    if interrupted is not None:
        figures = False  # stopping should be quick
    with stopping.deferred():
        if heartbeat is not None:
            heartbeat.stop()
        outputs_tic = time.perf_counter()
        kept = wrap_up(cfg, ctx, built, ending, tracker, figures=figures,
                       history_log=history_log)
        run_id = tracker.run_id if tracker else None
        summary = job_summary(ctx, cfg, ending, run_id, time.perf_counter() - tic,
                              built.net.n_layers)
        # Where the job's time went (seconds): what the study benchmark adds up.
        summary |= {"seconds_setup": setup_s,
                    "seconds_training": result.seconds if result is not None else None,
                    "seconds_outputs": time.perf_counter() - outputs_tic,
                    "seconds_metric_logging": tracker.seconds_logging if tracker else None}
        summary = finish(ctx, summary)
    if interrupted is not None:
        line = f"Interrupted by {interrupted}: {kept}"
        if not ctx.multirun:
            raise stopping.Interrupted(interrupted, line)
        print(line, flush=True)
        return summary
    if not ctx.multirun:
        if error is not None:
            raise error
        if ending.outcome != "finished":
            raise RunFailed(f"Run {ctx.run_name} {ending.outcome}: {ending.reason}. {kept}")
    return summary


def _signal_name(exc: KeyboardInterrupt, ctx: JobContext) -> str:
    """The stop signal behind a KeyboardInterrupt: its own, the sweep's (a Ray task cancelled
    by the launching process), or SIGINT."""
    from hydra.core.hydra_config import HydraConfig

    name = getattr(exc, "signame", None)
    if ctx.multirun and not ctx.in_launching_process and HydraConfig.initialized():
        # A worker: what stopped the sweep (a Ray task is cancelled with a SIGINT of its own).
        found = stopping.sweep_stopped(HydraConfig.get().sweep.dir, ctx.sweep_id)
        if found and found != name:
            return f"{found} (the sweep was stopped)"
    return name or "SIGINT"


def _heartbeat(tracker: RunTracker):
    from backprop_lab.tracking import Heartbeat

    return Heartbeat(tracker.backend, tracker.run_id).start()


class _HistoryHolder:
    """Keeps the History even when train() raises before returning it."""

    history = None

    def on_train_start(self, net, dataset, history) -> None:
        self.history = history


def _start_tracking(cfg: DictConfig, ctx: JobContext, built: Built,
                    extra_tags: dict[str, str]) -> RunTracker:
    """Open the job's run (params, tags, its parent) and the training callback writing to it."""
    from backprop_lab import tracking

    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, ctx.base_dir)
    experiment_id = tracking.ensure_experiment(uri, cfg.tracking.experiment,
                                               cfg.tracking.artifact_location)
    params = flatten(to_plain(cfg)) | derived_params(built)
    tags = {
        ROLE_TAG: "job",
        "hydra.overrides": " ".join(ctx.overrides),  # masked by the store (secrets.py)
        **{f"choice.{k}": v for k, v in ctx.choices.items()},
        **tracking.git_tags(),
        OUTPUT_DIR_TAG: str(ctx.output_dir),
        **extra_tags,
    }
    if ctx.multirun:
        from backprop_lab.harness.resume import JOB_KEY_TAG, job_key

        tags[JOB_KEY_TAG] = job_key(ctx.overrides)
    run_id = tracking.create_run(uri, experiment_id, ctx.run_name, params=params, tags=tags,
                                 parent_run_id=ctx.parent_run_id)
    return tracking.RunTracker(tracking.open_store(uri), run_id,
                               log_every=cfg.tracking.log_every,
                               log10=list(cfg.tracking.log10))


def _mask_hydra_files(ctx: JobContext) -> None:
    """The job's .hydra/*.yaml (and its sweep's multirun.yaml), which Hydra wrote before the
    job started, with credentials masked (tracking/secrets.py): they are logged as artifacts."""
    from backprop_lab.tracking.secrets import mask_file, mask_files

    mask_files(ctx.output_dir / ".hydra")
    if ctx.multirun:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            from pathlib import Path

            mask_file(Path(HydraConfig.get().sweep.dir) / "multirun.yaml")


def task(cfg: DictConfig) -> dict:
    """Hydra's task function (module level, so launcher workers can import it)."""
    from backprop_lab.tracking.secrets import install_output_masking

    install_output_masking()  # a launcher's worker process: its output too
    return train_and_track(cfg)


def main() -> None:
    """Entry point of ``train.py`` and the ``backprop-train`` console script."""
    try:
        _compose_and_run()
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP: one line, no traceback
        name = getattr(exc, "signame", "SIGINT")
        message = getattr(exc, "message", None) or "stopped before any run was created."
        if not message.startswith("Interrupted"):
            message = f"Interrupted by {name}: {message}"
        sys.stderr.write(f"\n{message}\n")
        sys.stderr.flush()
        status = exc.exit_status if isinstance(exc, stopping.Interrupted) else 130
        raise SystemExit(status) from None


def _compose_and_run() -> None:
    """Hydra's main around :func:`task`, with the stop signals handled from the start (a Ctrl-C
    while the imports or the configs' registration run is one line, not a traceback)."""
    import warnings

    import hydra

    # The Ray launcher plugin registers a schema named like its config file: harmless.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema",
        category=UserWarning)
    from backprop_lab.harness.sweep_configs import mode_composition_reused
    from backprop_lab.tracking.secrets import install_output_masking

    install_output_masking()  # no password or token in anything printed or logged
    stopping.install(raising=True)
    with stopping.deferred():  # a signal inside would leave OmegaConf's schema half built
        register_configs()
    if stopping.received():
        raise stopping.Interrupted(stopping.received())
    with mode_composition_reused():
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(task)()
