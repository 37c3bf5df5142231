"""Run figures rendered again from a run's saved outputs (a folder or an MLflow run) are the
figures rendered from the live objects when training ended, pixel for pixel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backprop_lab.harness import run_figures
from backprop_lab.harness.run_figures import FIGURE_FILES, RUN_FILES
from tests.conftest import cli_env

COMMAND = [sys.executable, "-m", "backprop_lab.harness.run_figures"]
CASES = {
    # The notebook's network (binary, sigmoid output; a legend of layers), a few epochs.
    "binary": ["dataset.n_samples=40", "epochs=25"],
    # Three classes (softmax), mini-batches, the legacy random stream, float32, 14 layers
    # (a colour scale instead of a legend): every enum of the config has a non-default value.
    "deep": ["dataset=blobs", "dataset.n_samples=30", "optimizer=sgd", "rng=legacy",
             "dtype=float32", "model=deep", "model.depth=13", "model.width=4", "epochs=8",
             "activation=relu"],
}


def pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_same_figures(expected: list[Path], actual: list[Path]) -> None:
    assert [p.name for p in actual] == [p.name for p in expected]
    for want, got in zip(expected, actual):
        np.testing.assert_array_equal(pixels(got), pixels(want), err_msg=got.name)


def train_tiny(overrides: list[str], folder: Path, name: str):
    """(Built, History) of a tiny run trained in-process.

    ``folder`` gets what a job saves and this module reads, in the documented layout:
    config.yaml (the resolved config), weights.npz (sizes, W1..WL, b1..bL), history.csv (epoch,
    then one column per metric, 9 significant digits), and summary.json naming the run ``name``.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from backprop_lab.contract import CONF_DIR
    from backprop_lab.engine.training import train
    from backprop_lab.harness.build import build
    from backprop_lab.harness.config import register_configs, to_plain

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["tracking=none", "progress=false",
                                           "histogram_every=0", *overrides])
    built = build(cfg)
    history = train(built.net, built.dataset, built.optimizer, epochs=cfg.epochs,
                    batch_size=built.batch_size, diagnostics=True, rng=built.shuffle_rng).history
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(to_plain(cfg)))
    net = built.net
    np.savez(folder / "weights.npz", sizes=np.array(net.sizes),
             **{f"W{l + 1}": W for l, W in enumerate(net.weights)},
             **{f"b{l + 1}": b for l, b in enumerate(net.biases)})
    history.to_frame().to_csv(folder / "history.csv", float_format="%.9g")
    (folder / "summary.json").write_text(json.dumps({"run_name": name}))
    return built, history


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, tmp_path_factory):
    """(Built, History, folder, run name) of a tiny run, one per case."""
    folder = tmp_path_factory.mktemp(request.param)
    built, history = train_tiny(CASES[request.param], folder, request.param)
    return built, history, folder, request.param


def test_a_run_folder_gives_back_the_trained_objects(trained):
    built, history, folder, _ = trained
    net, dataset, saved = run_figures.load_run(folder)
    for name in ("X_train", "Y_train", "X_val", "Y_val"):
        np.testing.assert_array_equal(getattr(dataset, name), getattr(built.dataset, name))
    assert repr(net) == repr(built.net)
    np.testing.assert_array_equal(net.params, built.net.params)
    assert saved.n_rows == history.n_rows
    assert set(saved.scalars) == set(history.scalars)
    assert set(saved.layers) == set(history.layers)
    read = dict(saved.metric_items())
    for name, values in history.metric_items():  # history.csv keeps 9 significant digits
        np.testing.assert_allclose(read[name], values, rtol=1e-8, err_msg=name)


def test_figures_from_a_run_folder_equal_the_live_ones(trained, tmp_path):
    built, history, folder, name = trained
    live = run_figures.save_run_figures(built.net, built.dataset, history, tmp_path / "live",
                                        name)
    assert [p.name for p in live] == list(FIGURE_FILES)
    # title=None: the run's name from summary.json, as the job titled them
    again = run_figures.render_run_figures(folder, tmp_path / "again")
    assert_same_figures(live, again)
    default = run_figures.render_run_figures(folder)  # into the run's figures/, as a job does
    assert default == [folder / "figures" / name for name in FIGURE_FILES]


def test_the_command_renders_what_train_py_rendered(run_cli, tmp_path):
    """End to end: a single run's figures (rendered when training ended) == the command's."""
    done = run_cli("tracking=none", "progress=false", "epochs=20", "dataset.n_samples=40")
    assert done.returncode == 0, done.stderr
    job = tmp_path / "run"  # hydra.run.dir of the run_cli fixture
    assert sorted(p.name for p in (job / "figures").iterdir()) == sorted(FIGURE_FILES)
    out = tmp_path / "again"
    again = subprocess.run([*COMMAND, str(job), "--out", str(out)], cwd=tmp_path, env=cli_env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [str(out / name) for name in FIGURE_FILES]
    assert_same_figures([job / "figures" / name for name in FIGURE_FILES],
                        [out / name for name in FIGURE_FILES])


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory):
    """(tracking URI, run id, live figures) of an MLflow run holding a tiny run's three files."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    built, history = train_tiny(CASES["binary"], root / "job", "tiny")
    live = run_figures.save_run_figures(built.net, built.dataset, history, root / "live", "tiny")

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("figures",
                                          artifact_location=(root / "artifacts").as_uri())
    run_id = client.create_run(experiment, run_name="tiny").info.run_id
    for name in RUN_FILES:
        client.log_artifact(run_id, str(root / "job" / name))
    client.set_terminated(run_id)
    return uri, run_id, live


def test_the_command_renders_an_mlflow_run_and_logs_the_figures_to_it(mlflow_run, tmp_path):
    from mlflow.tracking import MlflowClient

    uri, run_id, live = mlflow_run
    done = subprocess.run([*COMMAND, run_id, "--tracking-uri", uri], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert run_id in done.stdout and "figures/curves.png" in done.stdout
    client = MlflowClient(tracking_uri=uri)
    logged = sorted(a.path for a in client.list_artifacts(run_id, "figures"))
    assert logged == sorted(f"figures/{name}" for name in FIGURE_FILES)
    local = Path(client.download_artifacts(run_id, "figures", str(tmp_path / "down")))
    assert_same_figures(live, [local / name for name in FIGURE_FILES])


def test_a_missing_folder_is_a_one_line_error(tmp_path):
    bad = str(tmp_path / "no-such-run")
    done = subprocess.run([*COMMAND, bad], cwd=tmp_path, env=cli_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert bad in done.stderr and "Traceback" not in done.stderr


def test_an_unknown_run_id_is_a_one_line_error(mlflow_run, capsys):
    uri, _, _ = mlflow_run
    assert run_figures.main(["0" * 32, "--tracking-uri", uri]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "0" * 32 in err, err


def test_missing_outputs_and_stores_are_named(tmp_path, capsys):
    job = tmp_path / "sweep" / "0"
    job.mkdir(parents=True)
    (job / "config.yaml").write_text("seed: 1\n")
    assert run_figures.main([str(job)]) == 1
    assert "lacks history.csv, weights.npz" in capsys.readouterr().err
    assert run_figures.main([str(tmp_path / "sweep")]) == 1  # a sweep's folder: points to a job
    assert f"e.g. {job}" in capsys.readouterr().err
    db = tmp_path / "absent.db"
    assert run_figures.main(["f" * 32, "--tracking-uri", f"sqlite:///{db}"]) == 1
    assert str(db) in capsys.readouterr().err
    assert not db.exists()  # not created by looking


def test_log_axis_labels_are_plain_text():
    plain = run_figures._plain_log_label
    assert plain("$\\mathdefault{10^{-3}}$") == "10\u207b\u00b3"
    assert plain("$\\mathdefault{10^{0}}$") == "10\u2070"
    assert plain("$\\mathdefault{2\\times10^{12}}$") == "2\u00d710\u00b9\u00b2"
    assert plain("") == ""
    assert plain("$\\alpha$") == "$\\alpha$"  # anything else is left to mathtext


def test_history_csv_fields_empty_and_infinite(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,train/loss,train/accuracy,grad_norm/layer_1,grad_norm/layer_2\n"
                    "0,0.5,0.25,1e-3,\n1,inf,0.5,,2\n")
    history = run_figures.load_history(path, n_layers=2)
    assert history.n_rows == 2 and set(history.scalars) == {"train/loss", "train/accuracy"}
    np.testing.assert_array_equal(history.scalars["train/loss"], [0.5, np.inf])
    np.testing.assert_array_equal(history.layers["grad_norm"], [[1e-3, np.nan], [np.nan, 2]])
    assert run_figures.save_gradient_flow(history, tmp_path / "gradients.png")
    run_figures.save_curves(history, tmp_path / "curves.png")
    assert pixels(tmp_path / "curves.png").shape == (420, 1100, 3)
