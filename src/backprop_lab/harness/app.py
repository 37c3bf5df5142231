"""Train and track one job: the function ``train.py`` (and ``backprop-train``) calls through Hydra.

    python train.py                                   # the reference notebook's network
    python train.py -m activation=sigmoid,tanh,relu   # a sweep: one parent run, three children
    python train.py -m experiment=vanishing_gradients

One job = build the data set, network and optimizer from the composed config (bad values fail
here, before any MLflow run exists), open one MLflow run, train with a progress bar and a
buffered tracker as callbacks, save the outputs into Hydra's job folder, log them as artifacts,
end the run with its outcome. In a multirun a failing job is recorded (FAILED, with its reason)
and the sweep goes on; the Hydra callback in hydra_callbacks.py turns failures into the exit
status at the end.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from backprop_lab.contract import (
    CONF_DIR,
    OUTPUT_DIR_TAG,
    ROLE_TAG,
    SUMMARY_FILE,
    telemetry_off,
)
from backprop_lab.harness.build import Built, build, derived_params
from backprop_lab.harness.config import (
    ConfigError,
    flatten,
    register_configs,
    to_plain,
)
from backprop_lab.harness.job_context import JobContext
from backprop_lab.harness.progress import ProgressBar, grad_ratio, summary_line
from backprop_lab.harness.run_outputs import artifact_specs, save_outputs

if TYPE_CHECKING:
    from backprop_lab.engine.diagnostics import Histogram
    from backprop_lab.engine.history import History
    from backprop_lab.tracking.run_tracker import RunTracker

telemetry_off()  # MLflow is imported lazily, always after this
log = logging.getLogger(__name__)


class BadConfig(CompactHydraException):
    """A config that composes but cannot be trained; Hydra prints just the message."""


class RunFailed(CompactHydraException):
    """A single run that raised or diverged (its MLflow run is already marked FAILED)."""


@dataclass
class Ending:
    """How a job ended: finished | diverged | failed | killed | pruned, why, what it recorded."""

    outcome: str
    reason: str | None = None
    history: History | None = None
    histograms: list[Histogram] = field(default_factory=list)


def _summary(ctx: JobContext, cfg: DictConfig, ending: Ending, run_id: str | None,
             seconds: float, n_layers: int | None) -> dict:
    """The job's summary.json: what the sweep's table and runs.csv show."""
    history, outcome, reason = ending.history, ending.outcome, ending.reason
    final = history.final() if history is not None else {}
    return {
        "sweep_id": ctx.sweep_id,
        "job_num": ctx.job_num,
        "run_name": ctx.run_name,
        "overrides": ctx.overrides,
        "activation": cfg.activation.name,
        "outcome": outcome,
        "failure_reason": reason,
        "run_id": run_id,
        "epochs_run": max(0, (history.n_rows - 1) if history is not None else 0),
        "seconds": seconds,
        "n_layers": n_layers,
        "train_loss": final.get("train/loss"),
        "train_accuracy": final.get("train/accuracy"),
        "val_loss": final.get("val/loss"),
        "val_accuracy": final.get("val/accuracy"),
        "grad_ratio": grad_ratio(final, n_layers) if n_layers and final else None,
        "grad_ratio_init": (grad_ratio(history.row(0), n_layers)
                            if n_layers and history is not None and history.n_rows else None),
    }


def _finish(ctx: JobContext, summary: dict) -> dict:
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    (ctx.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    print(summary_line(summary), flush=True)
    return summary


def train_and_track(cfg: DictConfig) -> dict:
    """Run one job (see the module docstring); returns its summary (also in summary.json)."""
    from threadpoolctl import threadpool_limits

    from backprop_lab.engine.training import train

    ctx = JobContext.current(cfg)
    tic = time.perf_counter()
    try:
        built = build(cfg)
    except (ConfigError, ValueError) as exc:
        if not ctx.multirun:
            raise BadConfig(f"Invalid config: {exc}") from None
        return _finish(ctx, _summary(ctx, cfg, Ending("failed", f"invalid config: {exc}"),
                                     None, 0.0, None))

    trial = None
    if ctx.multirun:  # a trial of an Optuna sweep (harness/hpo.py)?
        from backprop_lab.harness import hpo_trial

        trial = hpo_trial.current_trial()
    tracker = None
    if cfg.tracking.enabled:
        tracker = _start_tracking(cfg, ctx, built,
                                  hpo_trial.trial_tags(trial[0]) if trial else {})
    bar = ProgressBar(cfg.epochs, ctx.run_name, enabled=cfg.progress and ctx.show_progress)
    callbacks = [bar] + ([tracker] if tracker is not None else [])
    pruning = hpo_trial.reporter(*trial) if trial else None
    if pruning is not None:
        callbacks.append(pruning)
    holder = _HistoryHolder()
    ending, result, error = Ending("failed"), None, None
    try:
        with threadpool_limits(limits=cfg.threads):
            result = train(built.net, built.dataset, built.optimizer, epochs=cfg.epochs,
                           batch_size=built.batch_size, callbacks=[holder, *callbacks],
                           diagnostics=cfg.diagnostics, histogram_every=cfg.histogram_every,
                           rng=built.shuffle_rng)
        ending = Ending(result.status, history=result.history, histograms=result.histograms)
        if result.status == "diverged":
            ending.reason = f"training loss not finite at epoch {result.diverged_epoch}"
        elif result.status == "stopped":  # only the pruning callback stops training
            ending.outcome, ending.reason = "pruned", result.stop_reason
    except KeyboardInterrupt:
        bar.close()
        _wrap_up(cfg, ctx, built, Ending("killed", "interrupted (KeyboardInterrupt)",
                                         holder.history), tracker, figures=False)
        raise
    except Exception as exc:  # recorded as FAILED; re-raised below for a single run
        bar.close()
        ending = Ending("failed", f"{type(exc).__name__}: {exc}", holder.history)
        error = exc
        if ctx.multirun:  # the sweep goes on: keep the traceback in the job's log
            log.error("run %s failed", ctx.run_name, exc_info=True)

    figures = cfg.figures if cfg.figures is not None else not ctx.multirun
    _wrap_up(cfg, ctx, built, ending, tracker, figures=figures)
    summary = _finish(ctx, _summary(ctx, cfg, ending, tracker.run_id if tracker else None,
                                    time.perf_counter() - tic, built.net.n_layers))
    if not ctx.multirun:
        if error is not None:
            raise error
        if ending.outcome != "finished":
            raise RunFailed(f"Run {ctx.run_name} {ending.outcome}: {ending.reason}")
    return summary


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
        "hydra.overrides": " ".join(ctx.overrides),
        **{f"choice.{k}": v for k, v in ctx.choices.items()},
        **tracking.git_tags(),
        OUTPUT_DIR_TAG: str(ctx.output_dir),
        **extra_tags,
    }
    run_id = tracking.create_run(uri, experiment_id, ctx.run_name, params=params, tags=tags,
                                 parent_run_id=ctx.parent_run_id)
    return tracking.RunTracker(tracking.open_store(uri), run_id,
                               log_every=cfg.tracking.log_every,
                               log10=list(cfg.tracking.log10))


def _wrap_up(cfg: DictConfig, ctx: JobContext, built: Built, ending: Ending,
             tracker: RunTracker | None, *, figures: bool) -> None:
    """Flush metrics first (the most valuable), then outputs and artifacts, then the status."""
    import warnings

    from backprop_lab import tracking

    history = ending.history
    if tracker is not None:
        try:
            if history is not None:
                tracker.attach(history)
            tracker.flush(final=True)
            tracker.backend.flush()
        except Exception as exc:  # keep going: the outputs still matter
            warnings.warn(f"could not flush metrics to MLflow: {exc}", stacklevel=2)
    tic = time.perf_counter()
    try:
        save_outputs(cfg, built.net, built.dataset, history, ending.histograms, ctx.output_dir,
                     figures=figures, title=ctx.run_name)
    except Exception as exc:
        warnings.warn(f"could not save the run's outputs: {exc}", stacklevel=2)
    if tracker is None:
        return
    timings = {"backprop_lab.seconds.metric_logging": f"{tracker.seconds_logging:.3f}"}
    images = cfg.tracking.images if cfg.tracking.images is not None else not ctx.multirun
    if images and cfg.tracking.log_artifacts:
        timings |= _step_images(ctx, ending, tracker)
    try:
        if cfg.tracking.log_artifacts:
            tracker.backend.log_artifacts(tracker.run_id, artifact_specs(ctx.output_dir))
        timings["backprop_lab.seconds.outputs"] = f"{time.perf_counter() - tic:.3f}"
    finally:
        tracking.end_run(tracker.backend.uri, tracker.run_id, ending.outcome, ending.reason,
                         timings)


def _step_images(ctx: JobContext, ending: Ending, tracker: RunTracker) -> dict[str, str]:
    """Render the run's step images into its folder (logged with its artifacts); the tags
    that tell the UI the run has images, and what rendering took."""
    import warnings

    from backprop_lab.harness.step_images import save_step_images
    from backprop_lab.tracking.images import IMAGES_DIR, LOGGED_IMAGES_TAG

    tic = time.perf_counter()
    times = tracker._times if tracker._times is not None else []
    stamps = [t or int(time.time() * 1000) for t in times]
    try:
        n = save_step_images(ending.history, ending.histograms, ctx.output_dir / IMAGES_DIR,
                             stamps, ctx.run_name)
    except Exception as exc:  # the metrics and outputs matter more
        warnings.warn(f"could not render the run's step images: {exc}", stacklevel=2)
        return {}
    if not n:
        return {}
    return {LOGGED_IMAGES_TAG: "True",
            "backprop_lab.seconds.images": f"{time.perf_counter() - tic:.3f}"}


def task(cfg: DictConfig) -> dict:
    """Hydra's task function (module level, so launcher workers can import it)."""
    return train_and_track(cfg)


def main() -> None:
    """Entry point of ``train.py`` and the ``backprop-train`` console script."""
    import warnings

    import hydra

    # The Ray launcher plugin registers a schema named like its config file: harmless.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema",
        category=UserWarning)
    register_configs()
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(task)()
