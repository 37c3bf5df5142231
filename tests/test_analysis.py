"""The analysis layer against a small real multirun: loaders, figures and the written summary.

The store comes from ``train.py -m`` (see test_analysis_store.py): 3 activations x depths 2, 3
x seeds 0, 1, 3 epochs. Expected values are read back through MlflowClient, independently of
the loaders under test.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from backprop_lab.analysis import figures, summary  # noqa: E402
from backprop_lab.analysis.demo_store import write_demo_sweep  # noqa: E402
from backprop_lab.analysis.loading import (  # noqa: E402
    FINAL_METRICS,
    ID_COLUMNS,
    default_tracking_uri,
    list_sweeps,
    load_sweep,
)
from backprop_lab.engine.history import (  # noqa: E402
    LAYER_METRICS,
    LOG10_METRICS,
    LOG10_SUFFIX,
    is_log10_companion,
    layer_metric_name,
)
from backprop_lab.engine.theory import backprop_std_factor, mean_field  # noqa: E402
from tests.test_analysis_store import (  # noqa: E402
    ACTIVATIONS,
    DEPTHS,
    EPOCHS,
    N_RUNS,
    REPO,
    SEEDS,
    cli_sweep,
)

WIDTH = 8  # model.width of the test sweep
RTOL = 1e-8  # history.csv, the loaders' source, stores values to 9 significant digits
DEEPEST = max(DEPTHS)


@pytest.fixture(scope="session")
def analysis_store(tmp_path_factory):
    return cli_sweep(tmp_path_factory)


@pytest.fixture(scope="session")
def sweep(analysis_store):
    return load_sweep(analysis_store.uri)


@pytest.fixture(scope="session")
def client(analysis_store):
    return MlflowClient(tracking_uri=analysis_store.uri)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _geomean(values) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=float)))))


def _step_value(client, run_id: str, key: str, step: int) -> float:
    return next(m.value for m in client.get_metric_history(run_id, key) if m.step == step)


def _same_color(line, color) -> bool:
    return np.allclose(to_rgb(line.get_color()), to_rgb(color))


# -- loaders ------------------------------------------------------------------------------


def test_runs_table_has_one_row_per_job_with_config_final_metrics_and_status(
    analysis_store, sweep, client
):
    runs = sweep.runs
    assert sweep.sweep_id == analysis_store.parent_run_id
    assert len(runs) == N_RUNS and runs["run_id"].is_unique
    assert set(runs["activation"]) == set(ACTIVATIONS)
    assert set(runs["depth"]) == set(DEPTHS) and set(runs["seed"]) == set(SEEDS)
    assert (runs["n_layers"] == runs["depth"] + 1).all()
    assert (runs["width"] == WIDTH).all() and (runs["epochs"] == EPOCHS).all()
    assert (runs["status"] == "FINISHED").all() and (runs["outcome"] == "finished").all()
    assert dict(zip(runs["activation"], runs["init"], strict=True)) == {
        "sigmoid": "lecun", "tanh": "lecun", "relu": "he"}
    for row in runs.itertuples():
        run = client.get_run(row.run_id)
        assert run.data.tags["mlflow.parentRunId"] == analysis_store.parent_run_id
        assert row.sizes == "-".join(["2", *[str(WIDTH)] * row.depth, "1"])
        for key in FINAL_METRICS:
            assert runs.set_index("run_id").loc[row.run_id, key] == run.data.metrics[key], key


def test_histories_hold_every_run_epoch_layer_and_metric_with_the_run_columns(sweep):
    histories = sweep.histories
    assert list(histories.columns) == [*ID_COLUMNS, "epoch", "layer", "metric", "value"]
    for run in sweep.runs.itertuples():
        rows = histories[histories["run_id"] == run.run_id]
        n_layers = run.n_layers
        assert len(rows) == (EPOCHS + 1) * (len(FINAL_METRICS) + len(LAYER_METRICS) * n_layers)
        assert set(rows["epoch"]) == set(range(EPOCHS + 1))
        per_layer = rows[rows["layer"].notna()]
        assert set(per_layer["metric"].astype(str)) == set(LAYER_METRICS)
        assert set(per_layer["layer"]) == set(range(1, n_layers + 1))
        assert set(rows.loc[rows["layer"].isna(), "metric"].astype(str)) == set(FINAL_METRICS)
        for column in ("activation", "init", "depth", "seed", "label", "run_name"):
            assert (rows[column].astype(object) == getattr(run, column)).all(), column


def test_histories_equal_what_the_metric_history_api_returns(sweep, client):
    run = sweep.runs.iloc[-1]
    rows = sweep.histories[sweep.histories["run_id"] == run["run_id"]]
    keys = client.get_run(run["run_id"]).data.metrics
    companions = [k for k in keys if is_log10_companion(k)]
    assert len(companions) == len(LOG10_METRICS) * run["n_layers"]
    # The run's end-of-run summary (engine/run_summary.py): not part of the history.
    summary = {k for k in keys if k.startswith("vanishing/")}
    assert summary == {"vanishing/log10_ratio_init", "vanishing/log10_ratio_end",
                       "vanishing/measured_factor_init", "vanishing/theory_factor",
                       "vanishing/at_chance"}
    assert len(keys) == (len(FINAL_METRICS) + len(LAYER_METRICS) * run["n_layers"]
                         + len(companions) + len(summary))
    companions += sorted(summary)
    for key in companions:  # log10 of the metric it accompanies, NaN where that is not > 0
        if key in summary:
            continue
        metric, _, layer = key.partition("/")
        base = f"{metric.removesuffix(LOG10_SUFFIX)}/{layer}"
        plain = {m.step: m.value for m in client.get_metric_history(run["run_id"], base)}
        for m in client.get_metric_history(run["run_id"], key):
            if plain[m.step] > 0:
                assert m.value == pytest.approx(np.log10(plain[m.step]), abs=1e-9), key
            else:
                assert np.isnan(m.value), key
    for key in set(keys) - set(companions):
        metric, _, layer = key.partition("/layer_")
        selected = rows[rows["metric"] == metric]
        selected = selected[selected["layer"] == int(layer)] if layer else selected
        expected = {m.step: m.value for m in client.get_metric_history(run["run_id"], key)}
        got = selected.set_index("epoch")["value"].sort_index()
        assert got.index.tolist() == sorted(expected), key
        # history.csv keeps 9 significant digits
        np.testing.assert_allclose(got.to_numpy(), [expected[e] for e in got.index],
                                   rtol=RTOL, equal_nan=True, err_msg=key)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({c: object for c in frame.columns if frame[c].dtype == "category"})
    return frame.sort_values(["run_id", "metric", "layer", "epoch"]).reset_index(drop=True)


def test_the_artifact_and_the_metric_api_paths_give_the_same_table(analysis_store, sweep):
    by_metrics = load_sweep(analysis_store.uri, source="metrics")
    pd.testing.assert_frame_equal(_sorted(sweep.histories), _sorted(by_metrics.histories),
                                  check_exact=False, rtol=RTOL, atol=0)


def test_a_run_without_history_csv_is_read_through_the_metric_api(tmp_path):
    demo = write_demo_sweep(tmp_path, activations=("tanh",), depths=(2,), seeds=(0, 1),
                            epochs=2)
    client = MlflowClient(tracking_uri=demo.uri)
    artifacts = client.get_run(demo.child_run_ids[0]).info.artifact_uri
    (Path(unquote(urlparse(artifacts).path)) / "history.csv").unlink()
    with pytest.raises(FileNotFoundError, match="history.csv"):
        load_sweep(demo.uri, source="artifact")
    auto = load_sweep(demo.uri).histories
    assert set(auto["run_id"]) == set(demo.child_run_ids)
    pd.testing.assert_frame_equal(_sorted(auto), _sorted(load_sweep(demo.uri,
                                                                     source="metrics").histories))


def test_a_sweep_is_chosen_by_id_or_as_the_latest_or_a_whole_experiment_is_taken(
    analysis_store, sweep, client
):
    assert list_sweeps(analysis_store.uri)["run_id"].tolist() == [analysis_store.parent_run_id]
    by_id = load_sweep(analysis_store.uri, sweep=analysis_store.parent_run_id)
    assert set(by_id.runs["run_id"]) == set(sweep.runs["run_id"])
    experiment = client.get_experiment(client.get_run(analysis_store.parent_run_id).info.experiment_id)
    everything = load_sweep(analysis_store.uri, experiment=experiment.name, sweep=None)
    assert everything.sweep_id is None
    assert set(everything.runs["run_id"]) == set(sweep.runs["run_id"])  # no parent run in it
    with pytest.raises(ValueError, match="no experiment 'nope'"):
        load_sweep(analysis_store.uri, experiment="nope")


def test_the_default_store_is_the_environment_then_the_repository_database(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri() == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri() == f"sqlite:///{REPO / 'mlflow.db'}"


# -- figures: each one draws, is labelled, and plots the store's numbers -------------------


def _assert_labelled(fig):
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert all(ax.get_title() for ax in panels), "panel without a title"
    assert fig.get_suptitle() or len(panels) == 1, "figure without a title"
    assert any(ax.get_xlabel() for ax in panels) or fig.get_supxlabel(), "no x label"
    assert any(ax.get_ylabel() for ax in panels), "no y label"


def _drawn(ax):
    """The axes' data lines (legend proxies are empty lines)."""
    return [line for line in ax.lines if len(line.get_xdata())]


def test_vanishing_profile_plots_the_measured_layers_and_the_theory(sweep):
    histories = sweep.histories
    fig = figures.plot_vanishing_profile(histories)
    _assert_labelled(fig)
    assert len(fig.legends) == 1
    colors = figures.palette(histories)
    init_delta = fig.axes[0]  # row delta_std, column at initialization
    assert init_delta.get_yscale() == "log" and "δ" in init_delta.get_ylabel()
    for label, color in colors.items():
        rows = histories[(histories["metric"] == "delta_std") & (histories["depth"] == DEEPEST)
                         & (histories["epoch"] == 0) & (histories["label"] == label)]
        expected = rows.groupby("layer")["value"].agg(_geomean)
        lines = [line for line in _drawn(init_delta) if _same_color(line, color)]
        measured = [line for line in lines if line.get_linestyle() == "-"]
        theory = [line for line in lines if line.get_linestyle() == "--"]
        linear = [line for line in lines if line.get_linestyle() == ":"]
        assert len(measured) == 1 and len(theory) == 1 and len(linear) == 1, label
        np.testing.assert_allclose(measured[0].get_ydata(), expected.to_numpy(), rtol=1e-9)
        first = rows.iloc[0]
        sizes = [int(w) for w in first["sizes"].split("-")]
        q0 = first["input_var"] if np.isfinite(first["input_var"]) else 1.0
        mf = mean_field(first["activation"], first["init"], sizes, input_var=q0)
        predicted = np.asarray(theory[0].get_ydata())
        assert predicted[-1] == pytest.approx(expected[DEEPEST])  # anchored at layer L-1
        np.testing.assert_allclose(predicted[:-1] / predicted[1:], mf.std_factors[:DEEPEST - 1],
                                   rtol=1e-9)
        factor = backprop_std_factor(first["activation"], first["init"], WIDTH, WIDTH)
        predicted = np.asarray(linear[0].get_ydata())
        assert predicted[-1] == pytest.approx(expected[DEEPEST])
        np.testing.assert_allclose(predicted[:-1] / predicted[1:], factor, rtol=1e-9)


def test_grad_weight_ratio_has_one_panel_per_activation_and_one_line_per_layer(sweep):
    histories = sweep.histories
    fig = figures.plot_grad_weight_ratio(histories)
    _assert_labelled(fig)
    assert [ax.get_title() for ax in fig.axes] == summary.label_order(histories)
    for ax in fig.axes:
        assert ax.get_yscale() == "log"
        assert len(_drawn(ax)) == DEEPEST + 1
        rows = histories[(histories["metric"] == "grad_weight_ratio")
                         & (histories["depth"] == DEEPEST) & (histories["layer"] == 1)
                         & (histories["label"] == ax.get_title())]
        expected = rows.groupby("epoch")["value"].agg(_geomean)
        np.testing.assert_allclose(_drawn(ax)[0].get_ydata(), expected.to_numpy(), rtol=1e-9)


def test_gradient_ratio_vs_depth_matches_first_over_last_layer_norms_in_the_store(
    sweep, client
):
    fig = figures.plot_gradient_ratio_vs_depth(sweep.histories)
    _assert_labelled(fig)
    colors = figures.palette(sweep.histories)
    at_init = fig.axes[0]
    assert at_init.get_yscale() == "log"
    for label, color in colors.items():
        runs = sweep.runs[sweep.runs["label"] == label]
        expected = []
        for depth in sorted(DEPTHS):
            ratios = [
                _step_value(client, run.run_id, layer_metric_name("grad_norm", 1), 0)
                / _step_value(client, run.run_id, layer_metric_name("grad_norm", run.n_layers), 0)
                for run in runs[runs["depth"] == depth].itertuples()
            ]
            expected.append(_geomean(ratios))
        drawn = [line for line in _drawn(at_init)
                 if _same_color(line, color) and line.get_linestyle() == "-"]
        assert len(drawn) == 1, label
        # at each depth, the configurations side by side (a few % of the axis apart)
        np.testing.assert_allclose(drawn[0].get_xdata(), sorted(DEPTHS), atol=0.05)
        np.testing.assert_allclose(drawn[0].get_ydata(), expected, rtol=RTOL)


def test_learning_curves_show_the_mean_over_seeds_per_depth(sweep):
    histories = sweep.histories
    fig = figures.plot_learning_curves(histories)
    _assert_labelled(fig)
    assert len(fig.axes) == 2 * len(DEPTHS)
    titles = {ax.get_title(): ax for ax in fig.axes}
    assert titles[f"loss, depth {DEEPEST}"].get_yscale() == "log"
    for metric, panel, mean in (("train/loss", "loss", _geomean),
                                ("val/accuracy", "accuracy", np.mean)):
        ax = titles[f"{panel}, depth {DEEPEST}"]
        for label in summary.label_order(histories):
            rows = histories[(histories["metric"] == metric) & (histories["label"] == label)
                             & (histories["depth"] == DEEPEST)]
            expected = rows.groupby("epoch")["value"].agg(mean).to_numpy()
            assert any(np.allclose(line.get_ydata(), expected, rtol=1e-9)
                       for line in _drawn(ax) if len(line.get_ydata()) == len(expected)), label


def test_saturation_heatmaps_show_saturation_or_dead_units_per_hidden_layer_and_epoch(sweep):
    histories = sweep.histories
    fig = figures.plot_saturation_heatmaps(histories)
    _assert_labelled(fig)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == len(ACTIVATIONS)
    for ax in panels:
        label = ax.get_title().split(":")[0]
        metric = "dead_fraction" if label.startswith("relu") else "saturation"
        assert ("dead" in ax.get_title()) == (metric == "dead_fraction")
        rows = histories[(histories["metric"] == metric) & (histories["label"] == label)
                         & (histories["depth"] == DEEPEST) & (histories["layer"] <= DEEPEST)]
        expected = rows.pivot_table(index="layer", columns="epoch", values="value",
                                    aggfunc="mean").sort_index(ascending=False)
        assert expected.shape == (DEEPEST, EPOCHS + 1)
        drawn = np.asarray(ax.collections[0].get_array()).reshape(expected.shape)
        np.testing.assert_allclose(drawn, expected.to_numpy(), rtol=1e-12)


def test_final_accuracy_vs_depth_matches_the_runs_final_metrics(sweep, client):
    fig = figures.plot_final_accuracy_vs_depth(sweep.runs)
    _assert_labelled(fig)
    ax = fig.axes[0]
    assert "validation accuracy" in ax.get_ylabel()
    for label, color in figures.palette(sweep.runs).items():
        runs = sweep.runs[sweep.runs["label"] == label]
        expected = [np.mean([client.get_run(r).data.metrics["val/accuracy"]
                             for r in runs.loc[runs["depth"] == depth, "run_id"]])
                    for depth in sorted(DEPTHS)]
        drawn = [line for line in _drawn(ax)
                 if _same_color(line, color) and line.get_linestyle() == "-"]
        assert len(drawn) == 1
        np.testing.assert_allclose(drawn[0].get_ydata(), expected, rtol=RTOL)


def test_final_accuracy_of_a_single_depth_sweep_is_a_bar_per_activation(sweep):
    runs = sweep.runs[sweep.runs["depth"] == DEEPEST]
    fig = figures.plot_final_accuracy_vs_depth(runs)
    _assert_labelled(fig)
    bars = fig.axes[0].patches
    expected = runs.groupby("label")["val/accuracy"].mean()
    order = summary.label_order(runs)
    np.testing.assert_allclose([b.get_height() for b in bars][: len(order)],
                               expected[order].to_numpy(), rtol=1e-12)


def test_figures_that_lack_their_metrics_are_left_out_with_a_warning(sweep):
    whole_network = sweep.histories[sweep.histories["layer"].isna()]  # as with diagnostics off
    with pytest.warns(UserWarning, match="left out"):
        drawn = figures.all_figures(sweep.runs, whole_network)
    assert set(drawn) == {"learning_curves", "final_accuracy_vs_depth"}
    text = "\n".join(summary.conclusions(sweep.runs, whole_network))
    assert f"Final val/accuracy at depth {DEEPEST}" in text


# -- summary ------------------------------------------------------------------------------


def _power_of_ten(ratio: float) -> str:
    exponent = math.log10(ratio)
    return f"{ratio:.2g}x" if abs(exponent) < 1 else f"10^{exponent:+.1f}"


def test_conclusions_are_computed_from_the_store(sweep, client):
    lines = summary.conclusions(sweep.runs, sweep.histories)
    text = "\n".join(lines)
    for label in summary.label_order(sweep.runs):
        runs = sweep.runs[(sweep.runs["label"] == label) & (sweep.runs["depth"] == DEEPEST)]
        ratio = _geomean([
            _step_value(client, run.run_id, layer_metric_name("grad_norm", 1), 0)
            / _step_value(client, run.run_id, layer_metric_name("grad_norm", run.n_layers), 0)
            for run in runs.itertuples()
        ])
        sentence = next(line for line in lines if line.startswith(f"**{label}**"))
        assert f"the layer-1 gradient norm is {_power_of_ten(ratio)}" in sentence
    assert f"at depth {DEEPEST}" in text
    # Different data, different words: nothing in the conclusion is fixed text.
    changed = sweep.histories.copy()
    first = (changed["metric"] == "grad_norm") & (changed["layer"] == 1)
    changed.loc[first, "value"] *= 1e-4
    changed_text = "\n".join(summary.conclusions(sweep.runs, changed))
    assert changed_text != text and "vanishes" in changed_text


def test_layer_factors_put_the_measurement_beside_the_theory(sweep):
    factors = summary.layer_factors(sweep.histories)
    assert set(factors["label"]) == set(sweep.runs["label"])
    assert (factors["runs"] == len(SEEDS)).all()
    for row in factors.itertuples():
        assert row.linear == pytest.approx(backprop_std_factor(row.activation, row.init,
                                                               WIDTH, WIDTH))
        run = sweep.runs[sweep.runs["label"] == row.label].iloc[0]
        q0 = run["input_var"] if np.isfinite(run["input_var"]) else 1.0
        mf = mean_field(row.activation, row.init, [int(w) for w in row.sizes.split("-")],
                        input_var=q0)
        steps = len(row.sizes.split("-")) - 3
        assert row.theory == pytest.approx(np.exp(np.mean(np.log(mf.std_factors[:steps]))))
        assert row.measured > 0


def test_summary_markdown_has_the_conclusion_tables_and_figure_links(sweep):
    text = summary.summary_markdown(sweep, {"vanishing profile": "vanishing_profile.png"})
    assert "## Conclusion" in text and "![vanishing profile](vanishing_profile.png)" in text
    for line in summary.conclusions(sweep.runs, sweep.histories):
        assert line in text
    for run_id in sweep.runs["run_id"]:
        assert run_id in text


@pytest.mark.slow
def test_loading_a_36_run_20_layer_sweep_from_artifacts_takes_seconds(tmp_path):
    demo = write_demo_sweep(tmp_path, depths=(19,), seeds=range(12), epochs=20)
    start = time.perf_counter()
    by_artifact = load_sweep(demo.uri, source="artifact")
    artifact_seconds = time.perf_counter() - start
    start = time.perf_counter()
    by_metrics = load_sweep(demo.uri, source="metrics")
    metrics_seconds = time.perf_counter() - start
    print(f"36 runs x 20 layers: history.csv {artifact_seconds:.1f} s, "
          f"get_metric_history {metrics_seconds:.1f} s ({os.cpu_count()} cores)")
    assert len(by_artifact.runs) == 36 and len(by_artifact.histories) == len(by_metrics.histories)
    assert artifact_seconds < metrics_seconds / 2


@pytest.fixture
def tracking_server(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, proxied artifacts)."""
    import signal
    import subprocess

    from backprop_lab.tracking.server import free_port
    from tests.conftest import wait_for_health

    port = free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(uri, server, timeout=120)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.integration
def test_loaders_read_a_tracking_server_like_a_sqlite_store(tracking_server, tmp_path):
    demo = write_demo_sweep(None, uri=tracking_server, activations=("sigmoid", "relu"),
                            depths=(2, 3), seeds=(0, 1), epochs=3)
    local = write_demo_sweep(tmp_path / "local", activations=("sigmoid", "relu"),
                             depths=(2, 3), seeds=(0, 1), epochs=3)
    served = load_sweep(tracking_server)  # history.csv through the artifact proxy
    assert served.sweep_id == demo.parent_run_id
    assert set(served.runs["run_id"]) == set(demo.child_run_ids)
    pd.testing.assert_frame_equal(_sorted(served.histories),
                                  _sorted(load_sweep(tracking_server, source="metrics").histories))
    # Same numbers as the same sweep written to SQLite, apart from the run ids.
    on_disk = load_sweep(local.uri)
    columns = ["run_name", "metric", "layer", "epoch", "value"]
    key = ["run_name", "metric", "layer", "epoch"]
    pd.testing.assert_frame_equal(
        _sorted(served.histories)[columns].sort_values(key).reset_index(drop=True),
        _sorted(on_disk.histories)[columns].sort_values(key).reset_index(drop=True),
    )
