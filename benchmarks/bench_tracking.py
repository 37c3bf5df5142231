"""Benchmark 3: what MLflow tracking adds to a run: ours (buffered) against naive logging.

Three variants of the same job (config composed by Hydra exactly as ``train.py`` does, built by
``backprop_lab.app.build``), interleaved:

- untracked: ``train()`` alone;
- ours: the harness's tracking as ``app.py`` uses it: ``tracking.create_run`` (params, tags),
  a ``tracking.RunTracker`` training callback (buffered ``log_batch``), ``tracker.end``;
- naive: ``mlflow.start_run``, ``mlflow.log_params``, and a callback calling
  ``mlflow.log_metric`` once per value (as most tutorials do), ``mlflow.end_run``.

Both tracked variants log the same values (every metric of every logged history row) to a fresh
SQLite store in a temporary folder. Added time = tracked - untracked. Importing mlflow and
creating/migrating the store happen once per process, so they are measured separately and left
out of the per-run figures. Artifacts and figures (which the harness also logs) are left out
too: this benchmark is about metrics, the part that grows with epochs and layers.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    REPO_ROOT,
    Row,
    Table,
    at_least,
    fmt_time,
    has_module,
    interleaved,
    median,
    subprocess_env,
)

GOAL = 25.0
EXPERIMENTS = REPO_ROOT / "experiments"


def compose(overrides: list[str]):
    """The job config ``train.py <overrides>`` would run (Hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from backprop_lab.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="bench"):
        return hydra_compose("config", overrides=overrides)


def deepest_vanishing_overrides() -> tuple[list[str], str]:
    """Overrides for the deepest network of experiments/vanishing_gradients.yaml's sweep (other
    swept keys at their first value), and a description."""
    from omegaconf import OmegaConf

    exp = OmegaConf.load(EXPERIMENTS / "vanishing_gradients.yaml")
    params = dict(OmegaConf.select(exp, "hydra.sweeper.params") or {})
    overrides = ["experiment=vanishing_gradients"]
    for key, values in params.items():
        choices = [v.strip() for v in str(values).split(",")]
        if key == "model.depth":
            value = str(max(int(v) for v in choices))
        else:
            value = choices[0]
        overrides.append(f"{key}={value}")
    return overrides, " ".join(overrides[1:])


def mlflow_import_seconds(threads: int, repeats: int) -> float:
    """``import mlflow`` in a fresh interpreter (median)."""
    code = "import time; t = time.perf_counter(); import mlflow; print(time.perf_counter() - t)"
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=subprocess_env(threads), check=True, timeout=300)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return median(times)


class NaiveLogger:
    """Training callback: one ``mlflow.log_metric`` call per value of every logged row."""

    def __init__(self, log_every: int) -> None:
        self.log_every = log_every
        self.values = 0

    def _log_row(self, epoch: int, history) -> None:
        import mlflow

        for name, values in history.metric_items(epoch, epoch + 1):
            mlflow.log_metric(name, float(values[0]), step=epoch)
            self.values += 1

    def on_epoch_end(self, epoch: int, history) -> None:
        if epoch % self.log_every == 0:
            self._log_row(epoch, history)

    def on_train_end(self, result) -> None:
        last = result.history.n_rows - 1
        if last % self.log_every:
            self._log_row(last, result.history)


class Job:
    """One composed config, with the three ways of running it."""

    def __init__(self, cfg, uri: str, experiment_id: str) -> None:
        from backprop_lab.app import derived_params
        from backprop_lab.config import flatten, to_plain
        from backprop_lab.tracking import ROLE_TAG

        self.cfg, self.uri, self.experiment_id = cfg, uri, experiment_id
        built = self.build()
        self.params = flatten(to_plain(cfg)) | derived_params(built)
        self.tags = {ROLE_TAG: "job", "backprop_lab.benchmark": "tracking"}
        self.values_ours = 0
        self.values_naive = 0

    def build(self):
        from backprop_lab.app import build

        return build(self.cfg)

    def _train(self, built, callbacks=()):
        from backprop_lab.training import train

        return train(built.net, built.dataset, built.optimizer, epochs=self.cfg.epochs,
                     batch_size=built.batch_size, callbacks=list(callbacks),
                     diagnostics=self.cfg.diagnostics,
                     histogram_every=self.cfg.histogram_every, rng=built.shuffle_rng)

    def untracked(self) -> float:
        built = self.build()
        tic = time.perf_counter()
        self._train(built)
        return time.perf_counter() - tic

    def ours(self) -> float:
        from backprop_lab import tracking

        built = self.build()
        tic = time.perf_counter()
        run_id = tracking.create_run(self.uri, self.experiment_id, "ours", params=self.params,
                                     tags=self.tags)
        tracker = tracking.RunTracker(self.uri, run_id, log_every=self.cfg.tracking.log_every)
        result = self._train(built, [tracker])
        tracker.flush(final=True)
        tracker.end(result.status)
        seconds = time.perf_counter() - tic
        self.values_ours = tracker.values_logged
        return seconds

    def naive(self) -> float:
        import mlflow

        built = self.build()
        mlflow.set_tracking_uri(self.uri)
        logger = NaiveLogger(self.cfg.tracking.log_every)
        tic = time.perf_counter()
        with mlflow.start_run(experiment_id=self.experiment_id, run_name="naive"):
            mlflow.log_params(self.params)
            mlflow.set_tags(self.tags)
            self._train(built, [logger])
        seconds = time.perf_counter() - tic
        self.values_naive = logger.values
        return seconds


def run(quick: bool = False, threads: int = 1) -> Table:
    table = Table(
        key="tracking",
        title="3. Tracking overhead (MLflow, SQLite store)",
        what=(
            "The same job untracked, tracked by our harness (`tracking.RunTracker`: buffered "
            "`log_batch`, up to 1000 values a call) and tracked naively (one `mlflow.log_metric` "
            "call per value), interleaved, on a fresh SQLite store. Added time = tracked - "
            "untracked. First row: ratio = naive added / ours added (the goal); other rows: "
            "ratio = ours / untracked for whole harness runs (informative)."
        ),
        ratio_label="naive/ours added; ours/untracked",
    )
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    if not has_module("mlflow"):
        table.skipped = "mlflow is not installed"
        return table
    try:
        from backprop_lab import app, tracking  # noqa: F401  (the harness)
    except ImportError as exc:
        table.skipped = f"the harness is not importable yet ({exc})"
        return table

    repeats = 1 if quick else 2
    tmp = Path(tempfile.mkdtemp(prefix="backprop-bench-tracking-"))
    try:
        import_s = mlflow_import_seconds(threads, 1 if quick else 3)
        tic = time.perf_counter()
        import mlflow  # noqa: F401

        in_process_import = time.perf_counter() - tic
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        tic = time.perf_counter()
        experiment_id = tracking.ensure_experiment(uri, "bench")
        first_connection = time.perf_counter() - tic
        migration = float("nan")
        if not quick:  # a second new store: the migration alone, the SQL store already imported
            tic = time.perf_counter()
            tracking.ensure_experiment(f"sqlite:///{tmp / 'second.db'}", "bench")
            migration = time.perf_counter() - tic

        # -- ours against naive on a short notebook run (naive costs ms a value) --------------
        short = 3 if quick else 50
        notebook = compose(["experiment=seed_notebook", "progress=false", f"epochs={short}"])
        job = Job(notebook, uri, experiment_id)
        small = Job(compose(["experiment=seed_notebook", "progress=false", "epochs=2"]),
                    uri, experiment_id)
        small.ours(), small.naive(), small.untracked()  # warm up both code paths
        times = interleaved({"untracked": job.untracked, "ours": job.ours, "naive": job.naive},
                            repeats, warmup=0)
        base, ours, naive = (median(times[k]) for k in ("untracked", "ours", "naive"))
        ours_added, naive_added = ours - base, naive - base
        values = job.values_ours
        table.add(Row(
            case=f"ours vs naive: seed_notebook, {short} epochs",
            ratio=naive_added / ours_added if ours_added > 0 else float("inf"),
            label="naive added / ours added",
            goal=at_least(GOAL),
            cells={
                "values logged": f"{values} ({job.values_naive} naive)",
                "untracked": fmt_time(base),
                "ours": fmt_time(ours),
                "naive": fmt_time(naive),
                "added: ours": fmt_time(ours_added),
                "added: naive": fmt_time(naive_added),
                "per value: ours / naive": (
                    f"{ours_added / values * 1e3:.3f} / "
                    f"{naive_added / max(job.values_naive, 1) * 1e3:.2f} ms"),
            },
            values={"untracked_s": base, "ours_s": ours, "naive_s": naive, "values": values},
            ok=values == job.values_naive and values > 0,
        ))

        # -- ours against untracked on whole runs ----------------------------------------------
        deep_overrides, deep_label = deepest_vanishing_overrides()
        whole = [
            ("seed_notebook run",
             ["experiment=seed_notebook"] + (["epochs=5"] if quick else [])),
            (f"vanishing_gradients deepest ({deep_label})",
             deep_overrides + (["epochs=5"] if quick else [])),
        ]
        for label, overrides in whole:
            job = Job(compose([*overrides, "progress=false"]), uri, experiment_id)
            times = interleaved({"untracked": job.untracked, "ours": job.ours}, repeats,
                                warmup=0)
            base, ours = median(times["untracked"]), median(times["ours"])
            values = job.values_ours
            table.add(Row(
                case=f"{label}, {job.cfg.epochs} epochs",
                ratio=ours / base,
                label="ours / untracked",
                cells={
                    "values logged": f"{values} (log_every={job.cfg.tracking.log_every})",
                    "untracked": fmt_time(base),
                    "ours": fmt_time(ours),
                    "added: ours": fmt_time(ours - base),
                    "per value: ours / naive": f"{(ours - base) / values * 1e3:.3f} ms / -",
                },
                values={"untracked_s": base, "ours_s": ours, "values": values},
                ok=values > 0,
            ))
            every = int(job.cfg.tracking.log_every)
            if ours / base > 2 and every == 1:
                n_metrics = round(values / (job.cfg.epochs // every + 1))
                table.notes.append(
                    f"{label}: {values} values ({n_metrics} metrics, most of them per-layer "
                    f"diagnostics, x {job.cfg.epochs // every + 1} steps) cost "
                    f"{fmt_time(ours - base)} to log against {fmt_time(base)} of training: "
                    "at this size tracking, not training, is the run's cost. history.csv (an "
                    "artifact of every run) already holds every epoch, so logging every 10th "
                    "epoch to MLflow (`tracking.log_every=10`, as the vanishing_gradients "
                    "experiment does with 5) would cut the added time about 10x.")
        table.notes += [
            f"Once per process, left out of the per-run figures: `import mlflow` "
            f"{fmt_time(import_s)} (fresh interpreter, median); creating the first new SQLite "
            f"store of a process (lazy imports of the SQL store, schema migrations) "
            f"{fmt_time(first_connection)}; creating and migrating a second new store "
            f"{'(not measured: --quick)' if math.isnan(migration) else fmt_time(migration)}. "
            "(`import mlflow` in this process, after hydra and the "
            f"harness had imported part of its dependencies: {fmt_time(in_process_import)}.)",
            f"{repeats} interleaved repeats, medians.",
        ]
    finally:
        if "mlflow" in sys.modules:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.end_run()
        shutil.rmtree(tmp, ignore_errors=True)
    return table
