"""How a job ends: its outcome and reason, what is flushed, saved and logged, its summary.

The order is what matters most first: metrics (the run's record) are flushed, then the job's
folder is written (config, weights, history.csv, histograms, figures), then its files are
logged as artifacts, then the run is ended with its outcome. A store that fails on the way does
not stop the rest (:func:`wrap_up`). The summary (summary.json) is what the sweep's table, the
runs.csv and the orphan check (tracking/orphans.py, for a run that could not be ended in its
store) read.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig

from backprop_lab.contract import STATUS, SUMMARY_FILE
from backprop_lab.engine import run_summary as rs
from backprop_lab.engine.run_summary import Chance, chance_of, vanishing_summary
from backprop_lab.harness.build import Built, theory_factor_of
from backprop_lab.harness.job_context import JobContext
from backprop_lab.harness.progress import grad_ratio, summary_line
from backprop_lab.harness.run_outputs import artifact_specs, save_outputs
from backprop_lab.tracking.secrets import mask

if TYPE_CHECKING:
    from backprop_lab.engine.diagnostics import Histogram
    from backprop_lab.engine.history import History
    from backprop_lab.tracking.run_tracker import RunTracker


@dataclass
class Ending:
    """How a job ended: finished | diverged | failed | killed | pruned, why, what it recorded."""

    outcome: str
    reason: str | None = None
    history: History | None = None
    histograms: list[Histogram] = field(default_factory=list)
    #: The run's ``vanishing/`` metrics, name -> (epoch, value) (engine/run_summary.py).
    vanishing: dict[str, tuple[int, float]] = field(default_factory=dict)
    chance: Chance | None = None

    # How training itself ended, before a store failure made a finished run "failed": what
    # tracking/restore.py marks the run with once it has put the missing epochs back.
    training_outcome: str | None = None
    training_reason: str | None = None
    jacobian: Any = None  # engine.jacobian.JacobianProbe of a run with jacobian_probes


def summarize(built: Built, ending: Ending) -> None:
    """Fill ``ending.vanishing`` and ``ending.chance`` from what the run recorded."""
    ending.chance = chance_of(built.dataset)
    try:
        theory = theory_factor_of(built)
    except ValueError:  # an activation theory cannot integrate: no prediction
        theory = math.nan
    ending.vanishing = vanishing_summary(ending.history, theory=theory, chance=ending.chance)


def vanishing_blocks(ending: Ending) -> list[tuple]:
    """The ``vanishing/`` metrics as metric blocks (names, steps, values, timestamps), each at
    the epoch it describes (0 or the last): written with the run's final flush."""
    by_step: dict[int, list[tuple[str, float]]] = {}
    for name, (step, value) in ending.vanishing.items():
        by_step.setdefault(step, []).append((name, value))
    now = np.array([int(time.time() * 1000)], dtype=np.int64)
    return [([n for n, _ in pairs], np.array([step]),
             np.array([[v] for _, v in pairs], dtype=float), now)
            for step, pairs in sorted(by_step.items())]


def job_summary(ctx: JobContext, cfg: DictConfig, ending: Ending, run_id: str | None,
             seconds: float, n_layers: int | None) -> dict:
    """The job's summary.json: what the sweep's table and runs.csv show."""
    history, outcome, reason = ending.history, ending.outcome, ending.reason
    final = history.final() if history is not None else {}
    return {
        "sweep_id": ctx.sweep_id,
        "job_num": ctx.job_num,
        "run_name": ctx.run_name,
        "overrides": [mask(o) for o in ctx.overrides],
        "activation": cfg.activation.name,
        "outcome": outcome,
        "failure_reason": mask(reason),
        "training_outcome": ending.training_outcome or outcome,
        "training_reason": mask(ending.training_reason if ending.training_outcome else reason),
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
        **{key: (ending.vanishing[name][1] if name in ending.vanishing else None)
           for key, name in rs.SUMMARY_KEYS.items()},
        "at_chance": (bool(ending.vanishing[rs.AT_CHANCE][1])
                      if rs.AT_CHANCE in ending.vanishing else None),
        "chance_accuracy": ending.chance.accuracy if ending.chance else None,
        "chance_tolerance": ending.chance.tolerance if ending.chance else None,
    }




def finish(ctx: JobContext, summary: dict) -> dict:
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    (ctx.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    print(summary_line(summary), flush=True)
    return summary


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def flow_record(cfg: DictConfig, ctx: JobContext, built: Built, ending: Ending,
                run_id: str | None) -> dict | None:
    """The job's record for the gradient-flow page (analysis/flow_records.py), from its
    history in memory; None without per-layer diagnostics."""
    from backprop_lab.analysis.flow_records import make_label, record_from_history
    from backprop_lab.harness.build import derived_params

    derived = derived_params(built)
    init = str(derived["net.init"])
    meta = {"id": run_id or f"job-{ctx.job_num}", "name": ctx.run_name,
            "sweep_id": ctx.sweep_id, "job_num": ctx.job_num,
            "label": make_label(cfg.activation.name, init), "activation": cfg.activation.name,
            "init": init, "depth": derived["net.depth"], "n_layers": derived["net.n_layers"],
            "width": derived["net.width"], "sizes": [int(s) for s in built.net.sizes],
            "seed": cfg.seed, "dataset": cfg.dataset.name, "optimizer": cfg.optimizer.name,
            "lr": cfg.optimizer.lr, "input_var": derived["data.input_var"],
            "outcome": ending.outcome, "status": STATUS[ending.outcome],
            "epochs_config": cfg.epochs,
            "chance_accuracy": ending.chance.accuracy if ending.chance else None,
            "chance_tolerance": ending.chance.tolerance if ending.chance else None}
    return record_from_history(ending.history, ending.histograms, meta)


def _gradient_flow(cfg: DictConfig, ctx: JobContext, built: Built, ending: Ending,
                   run_id: str | None) -> dict[str, str]:
    """Save the job's record into its folder (a sweep's page is made of them at the end of
    the sweep: harness/callbacks.py) and, for a single run, its own gradient-flow page
    (logged with its artifacts); the time it took, as a tag."""
    from backprop_lab.analysis.flow_records import save_record
    from backprop_lab.contract import FLOW_RECORD_FILE

    tic = time.perf_counter()
    try:
        record = flow_record(cfg, ctx, built, ending, run_id)
        if record is None:
            return {}
        save_record(record, ctx.output_dir / FLOW_RECORD_FILE)
        if not ctx.multirun:
            from backprop_lab.analysis.gradient_flow import write_page

            write_page([record], ctx.output_dir, title=ctx.run_name,
                       subtitle=f"one run: {built.net!r}")
    except Exception as exc:  # the metrics and outputs matter more
        _warn(f"could not make the run's gradient-flow page: {exc}")
        return {}
    return {"backprop_lab.seconds.gradient_flow": f"{time.perf_counter() - tic:.3f}"}


def wrap_up(cfg: DictConfig, ctx: JobContext, built: Built, ending: Ending,
             tracker: RunTracker | None, *, figures: bool, history_log=None) -> str:
    """Flush metrics first (the most valuable), then outputs and artifacts, then the status.

    A store that fails on the way (full disk, read-only, a server gone) does not stop the rest:
    the outputs are saved anyway, a finished run becomes FAILED naming the store's error, and
    the run is still ended. Returns one sentence saying what was kept and where.
    """
    history = ending.history
    rows = history.n_rows if history is not None else 0
    # The job's own record first: the rows history_log.py has not appended yet.
    history_written = history_log is not None and history_log.close()
    ending.training_outcome, ending.training_reason = ending.outcome, ending.reason
    store_error: Exception | None = None
    try:
        summarize(built, ending)
    except Exception as exc:  # a summary must not cost the run its record
        _warn(f"could not summarize the run's gradient flow: {exc}")
    if tracker is not None:
        try:
            if history is not None:
                tracker.attach(history)
            tracker.flush(final=True, extra=vanishing_blocks(ending))
            if ending.jacobian is not None and ending.jacobian.records:
                names, steps, values = ending.jacobian.metric_block()
                now = np.full(steps.size, int(time.time() * 1000), dtype=np.int64)
                tracker.backend.log_metrics(tracker.run_id, names, steps, values, now)
            tracker.backend.flush()
        except Exception as exc:  # keep going: the outputs still matter
            store_error = exc
            _warn(f"could not write metrics to MLflow: {exc}")
    tic = time.perf_counter()
    saved = True
    try:
        save_outputs(cfg, built.net, built.dataset, history, ending.histograms, ctx.output_dir,
                     figures=figures, title=ctx.run_name, write_history=not history_written,
                     jacobian=ending.jacobian.arrays() if ending.jacobian is not None else None)
    except Exception as exc:
        saved = False
        _warn(f"could not save the run's outputs in {ctx.output_dir}: {exc}")
    files = (f"{rows} history rows in {ctx.output_dir / 'history.csv'}" if saved and rows
             else f"outputs in {ctx.output_dir}" if saved
             else f"no outputs ({ctx.output_dir} could not be written)")
    page = {}
    if saved and ending.outcome != "killed" and (tracker is not None or not ctx.multirun):
        page = _gradient_flow(cfg, ctx, built, ending, tracker.run_id if tracker else None)
    if tracker is None:
        return f"kept {files}."
    timings = {"backprop_lab.seconds.metric_logging": f"{tracker.seconds_logging:.3f}", **page}
    if ending.jacobian is not None:
        timings["backprop_lab.seconds.jacobian"] = f"{ending.jacobian.seconds:.3f}"
    if cfg.tracking.log_artifacts and store_error is None:
        try:
            tracker.backend.log_artifacts(tracker.run_id, artifact_specs(ctx.output_dir))
            tracker.backend.flush()
        except Exception as exc:
            store_error = exc
            _warn(f"could not log the run's artifacts to MLflow: {exc}")
    timings["backprop_lab.seconds.outputs"] = f"{time.perf_counter() - tic:.3f}"
    outcome, reason = ending.outcome, ending.reason
    if store_error is not None:
        from backprop_lab.tracking.store import store_problem

        problem = (f"the MLflow store failed: {store_problem(store_error, created=True)}; "
                   f"restore later: python -m backprop_lab.tracking.restore {tracker.run_id}")
        if outcome == "finished":
            outcome, reason = "failed", problem
        else:
            reason = f"{reason}; {problem}"
    run = f"run {tracker.run_id} in {tracker.backend.uri}"
    ending.outcome, ending.reason = outcome, reason  # summary.json, read by the orphan check
    from backprop_lab import tracking

    try:
        tracking.end_run(tracker.backend.uri, tracker.run_id, outcome, reason, timings)
    except Exception as exc:
        return (f"could not mark {run} as ended ({type(exc).__name__}: {exc}); it stays "
                "RUNNING in the store until a later command on it records this ending (from "
                f"the job's summary.json; or: python -m backprop_lab.tracking.orphans "
                f"--repair); kept {files}.")
    metrics = ("its metrics" if store_error is None
               else "the metrics written before the store failed")
    return f"{run} marked {STATUS[outcome]} with {metrics}; kept {files}."
