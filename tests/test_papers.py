"""The papers' experiments (experiments/glorot_bengio.yaml, he_init_depth.yaml) run through the
real CLI at tiny sizes, and `python -m backprop_lab.report --paper ...` on what they recorded;
the MNIST-1D data set; the histogram helpers."""

from __future__ import annotations

import random
import re
import subprocess
import sys

import numpy as np
import pytest
from mlflow import MlflowClient

from backprop_lab.analysis import histograms as hist
from backprop_lab.analysis import load_sweep, mean_field, report
from backprop_lab.analysis.papers import PAPERS, build_report
from backprop_lab.engine.datasets import load_dataset
from backprop_lab.engine.history import layer_metric_name
from backprop_lab.engine.theory import depth_scale
from backprop_lab.engine.theory import mean_field as theory
from tests.test_analysis_store import REPO, subprocess_env

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = {
    "glorot_bengio": ["epochs=3", "dataset.n_samples=12", "model.width=8", "seed=0",
                      "histogram_every=1"],
    "he_init_depth": ["epochs=3", "dataset.n_samples=12", "model.width=8", "seed=0"],
    "schoenholz_depth_scale": ["epochs=2", "dataset.n_samples=12", "model.width=8",
                               "model.sigma_w2=1.0,3.0", "model.depth=2,6", "seed=0,1"],
    "dynamical_isometry": ["epochs=3", "dataset.n_samples=12", "model.width=8",
                           "model.depth=2,6", "seed=0,1", "histogram_every=1"],
    "cures": ["epochs=3", "dataset.n_samples=12", "model.depth=3", "model.width=8", "seed=0",
              "activation=tanh", "histogram_every=0"],
}
FIGURES = {
    "glorot_bengio": {"fig2_sigmoid_activations", "fig3_percentiles",
                      "fig6_activation_histograms", "fig7_delta_histograms",
                      "fig8_weight_gradient_histograms", "theory_profile", "error_curves"},
    "he_init_depth": {"loss_curves", "gradient_at_init"},
    "schoenholz_depth_scale": {"trainability"},
    "dynamical_isometry": {"spectra"},
    "cures": {"profiles_grad_norm", "profiles_delta_std", "val_loss"},
}


# -- MNIST-1D -----------------------------------------------------------------------------------
def test_mnist1d_is_generated_offline_deterministically_and_leaves_global_state_alone(
    monkeypatch,
):
    import mnist1d.data
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D must be generated, never downloaded")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(mnist1d.data, "get_dataset", no_network)
    # The generator reseeds numpy's global stream: code relying on it must not notice.
    np.random.seed(123)  # noqa: NPY002
    random.seed(7)
    before_np, before_py = np.random.random(), random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    random.seed(7)
    a = load_dataset("mnist1d", n_samples=20, rng=np.random.default_rng(0))
    assert (np.random.random(), random.random()) == (before_np, before_py)  # noqa: NPY002
    b = load_dataset("mnist1d", n_samples=20, rng=np.random.default_rng(0))
    assert a.n_features == 40 and a.n_classes == 10 and a.n_train + a.n_val == 200
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.Y_val, b.Y_val)
    assert np.bincount(np.argmax(np.hstack([a.Y_train, a.Y_val]), axis=0)).tolist() == [20] * 10


def test_mnist1d_default_is_the_packages_5000_samples():
    data = load_dataset("mnist1d", rng=np.random.default_rng(1))
    assert data.n_train == 4000 and data.n_val == 1000 and data.n_features == 40


# -- histogram helpers --------------------------------------------------------------------------
def test_histogram_quantile_and_density():
    values = np.random.default_rng(0).standard_normal(100_000)
    counts, edges = np.histogram(values, bins=64)
    width = edges[1] - edges[0]
    assert hist.quantile(counts, edges, 0.98) == pytest.approx(np.quantile(values, 0.98),
                                                               abs=width)
    x, d = hist.density(counts, edges)
    assert np.sum(d * np.diff(edges)) == pytest.approx(1.0)
    assert x[np.argmax(d)] == pytest.approx(0.0, abs=2 * width)


# -- the experiments and their reports, tiny ----------------------------------------------------
@pytest.fixture(scope="module")
def paper_store(tmp_path_factory):
    """Both experiments, shrunk, into one store; returns (uri, {paper: parent run id})."""
    root = tmp_path_factory.mktemp("papers")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    parents = {}
    for paper in PAPERS:
        done = subprocess.run(
            [sys.executable, str(REPO / "train.py"), "-m", f"experiment={paper}", *TINY[paper],
             "progress=false", f"tracking.uri={uri}", f"hydra.sweep.dir={root / paper}"],
            cwd=root, env=subprocess_env(), capture_output=True, text=True, timeout=600,
            check=False)
        log = done.stdout + done.stderr
        assert done.returncode == 0, log[-4000:]
        parents[paper] = re.search(r"MLflow parent run (\w+)", log)[1]
    return uri, parents, root


def test_the_experiments_sweep_what_they_say(paper_store):
    uri, parents, _ = paper_store
    client = MlflowClient(tracking_uri=uri)
    gb = load_sweep(uri, sweep=parents["glorot_bengio"])
    assert set(gb.runs["dataset"]) == {"mnist1d", "digits"}
    assert set(gb.runs["activation"]) == {"sigmoid", "tanh", "softsign"}
    assert set(gb.runs["init"]) == {"standard", "xavier_uniform"}
    assert (gb.runs["depth"] == 5).all() and len(gb.runs) == 12
    he = load_sweep(uri, sweep=parents["he_init_depth"])
    assert set(he.runs["depth"]) == {22, 30} and set(he.runs["init"]) == {"he", "xavier_uniform"}
    assert (he.runs["activation"] == "relu").all()
    run = client.get_run(gb.runs["run_id"].iloc[0])
    for l in range(1, 7):
        assert layer_metric_name("preact_var", l) in run.data.metrics
    assert float(run.data.params["data.input_var"]) > 0


@pytest.mark.parametrize("paper", PAPERS)
def test_report_paper_writes_figures_and_claims_and_logs_them(paper_store, paper, tmp_path):
    uri, parents, _ = paper_store
    out = tmp_path / paper
    assert report.main(["--uri", uri, "--paper", paper, "--out", str(out), "--dpi", "40"]) == 0
    written = {p.name for p in out.iterdir()}
    assert written == {f"{name}.png" for name in FIGURES[paper]} | {"summary.md"}
    for name in FIGURES[paper]:
        assert (out / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    text = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Claims" in text and "| claim | measurement | holds? |" in text
    sweep = load_sweep(uri, sweep=parents[paper])
    for claim in build_report(paper, sweep).claims:
        assert f"| {claim.claim} | {claim.measurement} | {claim.verdict} |" in text
    logged = MlflowClient(tracking_uri=uri).list_artifacts(parents[paper], "report")
    assert {a.path for a in logged} == {f"report/{name}" for name in written}


def test_glorot_bengio_table_and_theory_come_from_the_runs(paper_store):
    uri, parents, _ = paper_store
    sweep = load_sweep(uri, sweep=parents["glorot_bengio"])
    from backprop_lab.analysis.papers.glorot_bengio import error_table

    table = error_table(sweep.runs)
    row = table[(table["dataset"] == "digits") & (table["config"] == "tanh N")].iloc[0]
    runs = sweep.runs[(sweep.runs["dataset"] == "digits") & (sweep.runs["activation"] == "tanh")
                      & (sweep.runs["init"] == "xavier_uniform")]
    assert row["error % mean"] == pytest.approx(100 * (1 - runs["val/accuracy"].mean()))
    assert row["paper (MNIST)"] == 1.64
    factors = mean_field.factor_table(sweep.histories, sweep.runs)
    one = sweep.runs.iloc[0]
    expected = theory(one["activation"], one["init"], [int(w) for w in one["sizes"].split("-")],
                      input_var=one["input_var"])
    got = factors[(factors["dataset"] == one["dataset"]) & (factors["label"] == one["label"])]
    assert got["mean_field"].iloc[0] == pytest.approx(
        float(np.exp(np.log(expected.std_factors[:4]).mean())))
    scales = mean_field.depth_scale_table(sweep.runs).set_index(["activation", "init"])
    want = depth_scale("tanh", "standard", width=8, q0=float(
        sweep.runs.loc[sweep.runs["activation"] == "tanh", "input_var"].iloc[0]))
    assert scales.loc[("tanh", "standard"), "chi_1"] == pytest.approx(want.chi_1)
    assert scales.loc[("tanh", "standard"), "chi_1"] == pytest.approx(1 / 3)
    variances = mean_field.variance_table(sweep.histories, sweep.runs)
    assert set(variances["layer"]) == set(range(1, 7)) and (variances["q"] > 0).all()


def test_report_module_has_the_issues_spelling_and_rejects_unknown_papers(tmp_path):
    done = subprocess.run([sys.executable, "-m", "backprop_lab.report", "--help"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and "--paper" in done.stdout
    for paper in PAPERS:
        assert paper in done.stdout
    bad = subprocess.run([sys.executable, "-m", "backprop_lab.report", "--paper", "lecun98"],
                         env=subprocess_env(), capture_output=True, text=True, timeout=120,
                         check=False)
    assert bad.returncode == 2 and "invalid choice: 'lecun98'" in bad.stderr
    assert "glorot_bengio" in bad.stderr


def test_report_paper_without_its_sweep_says_how_to_make_one(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    assert report.main(["--uri", uri, "--paper", "he_init_depth", "--out",
                        str(tmp_path / "x")]) == 2
    assert "experiment=he_init_depth" in capsys.readouterr().err
