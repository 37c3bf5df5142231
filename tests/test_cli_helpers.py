"""The harness's small pieces, without a subprocess: URI resolution, run names, flattening, and
the tracker's blocks (written while training, every value exactly once, the last row always)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backprop_lab import tracking
from backprop_lab.contract import REPO_ROOT
from backprop_lab.engine.history import History, layer_metric_name
from backprop_lab.harness.config import flatten
from backprop_lab.harness.job_context import run_name
from backprop_lab.harness.progress import grad_ratio, runs_table


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (None, f"sqlite:///{REPO_ROOT / 'mlflow.db'}"),
        ("sqlite:///rel/x.db", "sqlite:////base/rel/x.db"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("runs.db", "sqlite:////base/runs.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_tracking_uri_is_made_absolute(monkeypatch, uri, expected) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(uri, Path("/base")) == expected


def test_tracking_uri_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert tracking.resolve_tracking_uri(None, Path("/base")) == "sqlite:////base/env.db"
    assert tracking.resolve_tracking_uri("sqlite:///cfg.db", Path("/b")) == "sqlite:////b/cfg.db"


def test_artifacts_go_beside_the_store_never_to_mlruns() -> None:
    assert tracking.default_artifact_location("sqlite:////data/s/mlflow.db") == \
        "file:///data/s/mlartifacts"
    assert tracking.default_artifact_location("http://127.0.0.1:5000") is None
    assert tracking.ui_command("sqlite:////d/m.db") == \
        "mlflow ui --backend-store-uri sqlite:////d/m.db --host 127.0.0.1"


def test_run_names_say_what_differs() -> None:
    overrides = ["activation=tanh", "model.depth=10", "seed=1", "epochs=5"]
    assert run_name(overrides, ["activation", "model.depth", "seed"]) == "tanh-depth10-seed1"
    assert run_name(["optimizer=adam", "model.init=he"], None) == "adam-init=he"
    assert run_name(["tracking.uri=x", "hydra.run.dir=y"], None, "fallback") == "fallback"


def test_flatten_lists_with_dots() -> None:
    assert flatten({"model": {"hidden": [16, 8], "init": "auto"}, "seed": 1}) == {
        "model.hidden.0": 16, "model.hidden.1": 8, "model.init": "auto", "seed": 1}


def test_grad_ratio_and_table() -> None:
    final = {layer_metric_name("grad_norm", 1): 0.001, layer_metric_name("grad_norm", 3): 0.1}
    assert grad_ratio(final, 3) == pytest.approx(0.01)
    assert np.isnan(grad_ratio({}, 3))
    table = runs_table([{"run_name": "tanh", "activation": "tanh", "outcome": "finished",
                         "train_loss": 0.1, "grad_ratio": 0.01}])
    assert table.splitlines()[0].split()[:3] == ["run", "activation", "outcome"]


class FakeBackend:
    """Records the blocks a RunTracker writes."""

    uri = "fake://"

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def log_metrics(self, run_id, names, steps, values, timestamps) -> None:
        assert values.shape == (len(names), len(steps)) == (len(names), len(timestamps))
        self.blocks.append((list(names), steps.copy(), values.copy(), timestamps.copy()))


def filled_history(rows: int, n_layers: int = 3) -> History:
    history = History(rows, n_layers, has_val=True, diagnostics=True)
    for values in history.scalars.values():
        values[:] = np.arange(rows)
    for values in history.layers.values():
        values[:] = np.arange(rows)[:, None]
    return history


@pytest.mark.parametrize("log_every", [1, 7])
def test_tracker_writes_blocks_while_training_and_every_value_once(log_every) -> None:
    fake = FakeBackend()
    rows = 101
    history = filled_history(rows)
    n_metrics = len(history.metric_names())
    tracker = tracking.RunTracker(fake, "run", log_every=log_every, block_values=10 * n_metrics,
                                  log10=())
    tracker.on_train_start(None, None, history)
    for epoch in range(rows):  # rows complete one by one, as in training
        history.n_rows = epoch + 1
        tracker.on_epoch_end(epoch, history)
    rows_per_block = 10 * log_every
    assert len(fake.blocks) == rows // rows_per_block  # written while training, in blocks
    tracker.flush(final=True)
    steps = np.concatenate([block[1] for block in fake.blocks])
    expected = sorted(set(range(0, rows, log_every)) | {rows - 1})  # the last row always
    assert steps.tolist() == expected  # in order, none twice
    for names, block_steps, values, timestamps in fake.blocks:
        assert names == history.metric_names()
        assert (values == block_steps[None, :]).all()  # row e holds e in every metric
        assert (timestamps > 0).all()
    assert tracker.values_logged == len(expected) * n_metrics
    assert tracker.flush(final=True) == 0  # nothing left


def test_a_job_that_raises_is_recorded_failed_with_its_reason(tmp_path, monkeypatch) -> None:
    """In a multirun a job's exception is recorded (run FAILED, reason tag, metrics kept) and
    returned as the job's outcome instead of stopping the sweep."""
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    from backprop_lab.contract import CONF_DIR
    from backprop_lab.engine import training
    from backprop_lab.harness import app
    from backprop_lab.harness.config import register_configs
    from backprop_lab.harness.job_context import JobContext

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["epochs=50", f"tracking.uri={uri}", "figures=false",
                                           "progress=false"])
    ctx = JobContext(output_dir=tmp_path / "job", base_dir=tmp_path, multirun=True,
                     run_name="boom")
    monkeypatch.setattr(JobContext, "current", classmethod(lambda cls, cfg: ctx))

    class Boom:
        def on_epoch_end(self, epoch, history):
            if epoch == 20:
                raise RuntimeError("boom")

    real_train = training.train
    monkeypatch.setattr(training, "train", lambda *a, callbacks=(), **k: real_train(
        *a, callbacks=[*callbacks, Boom()], **k))

    summary = app.train_and_track(cfg)
    assert summary["outcome"] == "failed"
    assert summary["failure_reason"] == "RuntimeError: boom"
    client = MlflowClient(uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["backprop_lab.failure_reason"] == "RuntimeError: boom"
    assert run.data.tags["backprop_lab.outcome"] == "failed"
    logged = client.get_metric_history(run.info.run_id, "train/loss")
    saved = (tmp_path / "job" / "history.csv").read_text().splitlines()
    assert len(logged) == len(saved) - 1 > 20  # everything recorded was flushed and saved


@pytest.mark.parametrize(("sweep", "compositions"), [
    (["activation=sigmoid,tanh,relu"], 0),  # the flagship: every job derived from the master
    (["activation=sigmoid,tanh", "epochs=5", "tracking=none", "+foo=1"], 0),
    (["model=mlp,deep", "optimizer.lr=0.1,0.2", "seed=1"], 2),
    (["experiment=vanishing_gradients", "model.depth=2,5", "activation=relu,tanh"], 0),
    (["optimizer=momentum,adam", "++optimizer.weight_decay=0.01", "epochs=5,6"], 2),
    (["optimizer=sgd,adam", "optimizer.lr=0.1,0.2"], 2),
    (["+foo=1,2", "seed=3,4"], 2),  # a key added by the job: composed with it
    (["+foo=1", "foo=2,3"], 2),  # a key added and set in one job: composed each time
    # A hydra.* override of the command line: the master's, and in override_dirname's layout.
    (["hydra.job.config.override_dirname.item_sep=_", "seed=1,2", "epochs=3"], 0),
])
def test_sweep_configs_equal_hydras_own_composition(sweep, compositions) -> None:
    """job_configs (and, through the composer it installs, Hydra's sweeper and launcher) derive
    jobs from the sweep's own composition where it fits, compose once per distinct choice of the
    other non-value overrides, and apply value overrides on top: every job's full config, hydra
    node included, equals the one Hydra composes from scratch."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from backprop_lab.contract import CONF_DIR
    from backprop_lab.harness.callbacks import job_configs, sweep_jobs
    from backprop_lab.harness.config import register_configs
    from backprop_lab.harness.sweep_configs import task_config

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().hydra.config_loader
        # As Hydra's multirun composes it (hydra._internal.utils._run_app appends the mode).
        master = loader.load_configuration("config", [*sweep, "hydra.mode=MULTIRUN"],
                                           RunMode.MULTIRUN, validate_sweep_overrides=False)
        jobs, _ = sweep_jobs(master)
        assert len(jobs) > 1
        hydras_own = type(loader).load_sweep_config  # the class's method: not the composer's
        try:
            fast = job_configs(master, jobs)
            composer = loader.load_sweep_config.__self__
            assert composer.compositions == compositions
            for overrides, cfg in zip(jobs, fast, strict=True):
                full = hydras_own(loader, master, overrides)
                assert OmegaConf.to_container(cfg) == OmegaConf.to_container(task_config(full))
                derived = loader.load_sweep_config(master, overrides)  # as the launcher gets it
                assert OmegaConf.to_container(derived) == OmegaConf.to_container(full), overrides
                assert derived.hydra.job.override_dirname == full.hydra.job.override_dirname
            assert composer.compositions == compositions  # the launcher's calls composed nothing
        finally:
            del loader.load_sweep_config  # the composer lives as long as the sweep


@pytest.mark.parametrize(("overrides", "mode"), [
    (["activation=sigmoid,tanh,relu"], "MULTIRUN"),
    (["model=mlp,deep", "+foo=1", "hydra.sweep.dir=elsewhere", "epochs=3"], "MULTIRUN"),
    (["hydra.mode=MULTIRUN", "seed=1,2"], "MULTIRUN"),  # the mode given by the user as well
    ([], "RUN"),  # python train.py
    (["model=deep", "+foo=1", "hydra.run.dir=elsewhere", "epochs=3"], "RUN"),
])
def test_hydra_reuses_the_composition_it_made_for_the_mode(overrides, mode,
                                                           monkeypatch) -> None:
    """Hydra composes once to read hydra.mode and once for the run or sweep: with
    mode_composition_reused the second is the first plus the appended hydra.mode override,
    equal to Hydra's own composition node for node."""
    from hydra import initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from backprop_lab.contract import CONF_DIR
    from backprop_lab.harness.config import register_configs
    from backprop_lab.harness.sweep_configs import mode_composition_reused

    register_configs()
    calls = []
    composing = ConfigLoaderImpl._load_configuration_impl
    monkeypatch.setattr(ConfigLoaderImpl, "_load_configuration_impl",
                        lambda self, *a, **k: calls.append(a) or composing(self, *a, **k))
    run_mode = RunMode[mode]
    appended = [*overrides, f"hydra.mode={mode}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        loader = hydra.config_loader
        with mode_composition_reused():
            found = hydra.get_mode("config", list(overrides))
            reused = hydra.compose_config("config", appended, run_mode=run_mode)
            assert len(calls) == 1
            assert "load_configuration" not in vars(loader)  # served once, then Hydra's own
        own = loader.load_configuration("config", appended, run_mode)
        assert found == hydra.get_mode("config", list(overrides))  # Hydra's own
    assert OmegaConf.to_container(reused) == OmegaConf.to_container(own)
    assert list(reused.hydra.overrides.hydra) == list(own.hydra.overrides.hydra)


@pytest.mark.parametrize(("overrides", "mode", "error"), [
    (["seed=1,2"], "RUN", "Ambiguous value"),  # python train.py seed=1,2 (without -m)
    (["hydra.job.chdir=true,false", "seed=1,2"], "MULTIRUN", "Sweeping over Hydra"),
])
def test_hydras_errors_stand_with_the_reused_composition(overrides, mode, error) -> None:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException
    from hydra.types import RunMode

    from backprop_lab.contract import CONF_DIR
    from backprop_lab.harness.config import register_configs
    from backprop_lab.harness.sweep_configs import mode_composition_reused

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        with mode_composition_reused():
            hydra.get_mode("config", list(overrides))
            with pytest.raises(ConfigCompositionException, match=error):
                hydra.compose_config("config", [*overrides, f"hydra.mode={mode}"],
                                     run_mode=RunMode[mode])


def test_history_csv_is_byte_for_byte_what_pandas_writes(tmp_path) -> None:
    """history.csv is written without pandas, in the layout the analysis reads with pandas."""
    import math

    from backprop_lab.harness.run_outputs import write_history_csv

    history = filled_history(7)
    history.scalars["train/loss"][:] = [0.1, math.nan, math.inf, -math.inf, 1e-300, 123456789.123,
                                        -0.0]
    history.layers["grad_norm"][2, 1] = math.nan
    history.n_rows = 6  # the last row not complete: not written
    write_history_csv(history, tmp_path / "ours.csv")
    history.to_frame().to_csv(tmp_path / "pandas.csv", float_format="%.9g")
    assert (tmp_path / "ours.csv").read_text() == (tmp_path / "pandas.csv").read_text()


def test_training_and_analysis_use_one_store_under_backprop_lab_root(tmp_path) -> None:
    """$BACKPROP_LAB_ROOT moves the project's default store for training and analysis alike."""
    import subprocess
    import sys

    code = ("from backprop_lab.tracking import resolve_tracking_uri;"
            "from backprop_lab.analysis.loading import default_tracking_uri;"
            "print(resolve_tracking_uri(None)); print(default_tracking_uri())")
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["BACKPROP_LAB_ROOT"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [f"sqlite:///{tmp_path / 'mlflow.db'}"] * 2


def test_tracker_adds_log10_companions_of_the_metrics_that_span_decades() -> None:
    from backprop_lab.engine.history import LOG10_METRICS, LOG10_SUFFIX

    fake = FakeBackend()
    history = filled_history(5)
    history.layers["grad_weight_ratio"][:, 0] = [1e-9, 1e-3, 0.0, np.nan, 10.0]
    tracker = tracking.RunTracker(fake, "run")
    tracker.on_train_start(None, None, history)
    history.n_rows = 5
    tracker.flush(final=True)
    # the plain metrics' block, then the companions' (one write where the store can)
    (names, steps, values, _), (extra_names, extra_steps, extra, _) = fake.blocks
    assert list(steps) == list(extra_steps) == [0, 1, 2, 3, 4]
    names, rows = [*names, *extra_names], dict(zip([*names, *extra_names], [*values, *extra]))
    companion = rows[layer_metric_name(f"grad_weight_ratio{LOG10_SUFFIX}", 1)]
    np.testing.assert_allclose(companion, [-9.0, -3.0, np.nan, np.nan, 1.0])
    expected = {layer_metric_name(f"{m}{LOG10_SUFFIX}", l) for m in LOG10_METRICS
                for l in range(1, history.n_layers + 1)}
    assert set(names) == set(history.metric_names()) | expected
