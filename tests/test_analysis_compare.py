"""Reports and notebooks over several sweeps, chance on every accuracy plot, one-depth figures,
and summary sentences that do not read a run at chance as a recovery.

Two small sweeps through the real CLI into one store (3 and 4 weight layers, different epochs),
read back with the analysis package.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from backprop_lab.analysis import figures, report, summary  # noqa: E402
from backprop_lab.analysis.loading import (  # noqa: E402
    SettingsDiffer,
    list_sweeps,
    load_sweep,
    setting_differences,
)
from tests.test_analysis_store import REPO, subprocess_env  # noqa: E402


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    """(uri, [id of the depth-2 sweep, id of the depth-3 sweep])."""
    root = tmp_path_factory.mktemp("two_sweeps")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    for i, extra in enumerate((["model.depth=2", "epochs=4"], ["model.depth=3", "epochs=6"])):
        done = subprocess.run(
            [sys.executable, str(REPO / "train.py"), "-m", "activation=sigmoid,relu",
             "model=deep", "model.width=8", "seed=0,1", *extra, "figures=false",
             "progress=false", "histogram_every=0", f"tracking.uri={uri}",
             f"hydra.sweep.dir={root / f'sweep{i}'}"],
            cwd=root, env=subprocess_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    ids = list(list_sweeps(uri)["run_id"])[::-1]  # oldest first
    return uri, ids


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_several_sweeps_load_together_with_a_warning_naming_what_differs(two_sweeps):
    uri, ids = two_sweeps
    with pytest.warns(SettingsDiffer, match=r"epochs \(4, 6\), model\.depth \(2, 3\)"):
        both = load_sweep(uri, None, ids)
    assert both.sweep_ids == ids and len(both.sweep_names) == 2
    assert len(both.runs) == 8 and set(both.runs["depth"]) == {2, 3}
    assert set(both.histories["run_id"]) == set(both.runs["run_id"])
    assert set(both.differences) == {"epochs", "model.depth"}  # not the swept activation, seed
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsDiffer)  # one sweep: nothing to warn about
        one = load_sweep(uri, None, ids[0])
    assert len(one.runs) == 4 and one.differences == {}
    with pytest.raises(TypeError, match="a parent run id"):
        load_sweep(uri, None, [ids[0], 3])


def test_setting_differences_ignore_what_a_group_varies():
    class Run:
        def __init__(self, **params):
            self.data = type("Data", (), {"params": {k.replace("_", "."): str(v)
                                                     for k, v in params.items()}})()

    a = [Run(activation="relu", epochs=5, seed=0), Run(activation="tanh", epochs=5, seed=1)]
    b = [Run(activation="relu", epochs=9, seed=0, tracking_uri="x")]
    assert setting_differences([a, b]) == {"epochs": ["5", "9"]}
    assert setting_differences([a]) == {}
    per_run = setting_differences([[run] for run in a + b], ignore=("activation", "seed"))
    assert per_run == {"epochs": ["5", "9"]}


def test_report_compares_several_sweeps_and_says_what_differs(two_sweeps, tmp_path, capsys):
    uri, ids = two_sweeps
    out = tmp_path / "both"
    args = ["--uri", uri, "--sweep", ids[0], "--sweep", ids[1], "--out", str(out), "--dpi", "50"]
    assert report.main(args) == 0
    err = capsys.readouterr().err
    assert "warning: the sweeps differ in settings besides the ones compared" in err
    assert "model.depth (2, 3)" in err
    text = (out / "summary.md").read_text()
    assert "differ in settings besides the ones compared**: epochs (4, 6)" in text
    assert all(i in text for i in ids)
    assert "depths (hidden layers): [2, 3]" in text  # both sweeps' runs, not the last one's
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for parent in ids:  # each sweep gets the report
        assert {a.path for a in client.list_artifacts(parent, "report")} >= {"report/summary.md"}


def test_report_on_all_runs_names_the_settings_that_differ_besides_depth(
        two_sweeps, tmp_path, capsys):
    uri, _ = two_sweeps
    assert report.main(["--uri", uri, "--all-runs", "--out", str(tmp_path / "all"),
                        "--no-log", "--dpi", "50"]) == 0
    assert "the runs differ in settings besides the ones compared: epochs (4, 6)" in (
        capsys.readouterr().err)
    assert "epochs (4, 6)" in (tmp_path / "all" / "summary.md").read_text()


def _chance_lines(ax, level: float) -> list:
    return [line for line in ax.get_lines() if len(line.get_ydata())
            and np.allclose(line.get_ydata(), level) and line.get_linestyle() == "--"]


def test_every_accuracy_plot_has_a_chance_line_and_one_depth_layouts(two_sweeps):
    uri, ids = two_sweeps
    sweep = load_sweep(uri, None, ids[0])  # one depth
    runs, histories = sweep.runs, sweep.histories
    level = float(runs["chance_accuracy"].max())
    assert 0.4 < level < 0.7  # two spiral classes: the majority share of 80 labels

    fig = figures.plot_learning_curves(histories, runs)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 2  # loss and accuracy side by side, no empty column
    (row,) = {round(ax.get_position().y0, 3) for ax in axes}  # one row
    accuracy = next(ax for ax in axes if ax.get_title().startswith("accuracy"))
    assert _chance_lines(accuracy, level)
    loss = next(ax for ax in axes if ax.get_title().startswith("loss"))
    assert not _chance_lines(loss, level)
    # without the runs table: 1/k from the output width
    assert _chance_lines(next(ax for ax in figures.plot_learning_curves(histories).axes
                              if ax.get_title().startswith("accuracy")), 0.5)

    fig = figures.plot_final_accuracy_vs_depth(runs)
    assert _chance_lines(fig.axes[0], level)

    fig = figures.plot_gradient_ratio_vs_depth(histories, runs)
    (ax,) = [a for a in fig.axes if a.get_xticklabels()]
    title = ax.get_title()
    assert "bars" not in title and "depth 2" in title and "each dot one run" in title
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sigmoid (lecun)", "relu (he)"]
    points = sum(len(c.get_offsets()) for c in ax.collections)
    assert points >= 2 * len(runs)  # every run at init and after training


def test_saturation_map_says_when_saturation_did_not_stop_a_run_at_chance(two_sweeps):
    uri, ids = two_sweeps
    sweep = load_sweep(uri, None, ids[1])
    runs = sweep.runs.copy()
    runs["at_chance"] = True  # as if every run ended at chance
    fig = figures.plot_saturation_heatmaps(sweep.histories, runs=runs)
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    peaks = sweep.histories[sweep.histories["metric"].isin(["saturation", "dead_fraction"])
                            & (sweep.histories["layer"] < sweep.histories["n_layers"])]
    low = peaks.groupby("label", observed=True)["value"].max() < figures.SATURATION_LOW
    assert sum("saturation is not what stopped" in n for n in notes) == int(low.sum())
    runs["at_chance"] = False
    fig = figures.plot_saturation_heatmaps(sweep.histories, runs=runs)
    assert not [t for ax in fig.axes for t in ax.texts]


def test_summary_does_not_read_a_run_at_chance_as_a_recovery(two_sweeps):
    uri, ids = two_sweeps
    sweep = load_sweep(uri, None, ids[1])
    runs = sweep.runs.copy()
    runs["at_chance"] = runs["activation"] == "sigmoid"
    lines = summary.conclusions(runs, sweep.histories)
    sigmoid = next(line for line in lines if line.startswith("**sigmoid"))
    relu = next(line for line in lines if line.startswith("**relu"))
    assert "after training it is" not in sigmoid
    assert "still at chance accuracy" in sigmoid and "is no recovery" in sigmoid
    assert "layer 4" in sigmoid  # the output layer's own gradient norm, before and after
    assert "after training it is" in relu and "chance" not in relu
    assert any(line.startswith("At chance:") for line in lines)


def test_a_notebook_takes_a_list_of_sweeps(two_sweeps, tmp_path, monkeypatch):
    from tests.test_notebooks import _execute, _parameters_cell, _read

    uri, ids = two_sweeps
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    notebook = _read("compare_activations.ipynb")
    _parameters_cell(notebook).source = (
        f"TRACKING_URI = {uri!r}\nEXPERIMENT = None\nSWEEP = {ids!r}")
    text = _execute(notebook, tmp_path, monkeypatch)
    assert "SweepData(2 sweeps" in text and "8 runs" in text
    warned = [o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", [])
              if o.get("name") == "stderr"]
    assert any("differ in settings besides the ones compared" in w and "model.depth (2, 3)" in w
               for w in warned), warned
