"""The harness end to end: `python train.py ...` in a subprocess, into a real SQLite store in a
temporary folder, read back with MLflow's client. A few epochs per job keep each test short."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from backprop_lab.engine.history import LOG10_METRICS, LOG10_SUFFIX, layer_metric_name
from tests.conftest import TRAIN, artifact_paths, cli_env, runs_of, split_roles

LAYER_METRICS = ("grad_weight_ratio", "grad_norm", "weight_norm", "update_ratio", "delta_std",
                 "act_mean", "act_std", "saturation", "dead_fraction", "preact_var")


#: The run's end-of-run summary (engine/run_summary.py), beside its history.
SUMMARY = {"vanishing/log10_ratio_init", "vanishing/log10_ratio_end",
           "vanishing/measured_factor_init", "vanishing/theory_factor", "vanishing/at_chance"}


def expected_metrics(n_layers: int, val: bool = True, log10: bool = True) -> set[str]:
    """The metric names of a run in MLflow (log10: with the companions history.csv has not)."""
    names = {"train/loss", "train/accuracy"} | ({"val/loss", "val/accuracy"} if val else set())
    metrics = LAYER_METRICS + (tuple(f"{m}{LOG10_SUFFIX}" for m in LOG10_METRICS) if log10 else ())
    return names | {layer_metric_name(m, l) for m in metrics for l in range(1, n_layers + 1)}


def test_flagship_multirun_parent_children_metrics_params_artifacts(
        run_cli, store, client_for, tmp_path):
    epochs = 5
    result = run_cli("-m", "activation=sigmoid,tanh,relu", f"epochs={epochs}",
                     f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    client = client_for(store)

    experiment = client.get_experiment_by_name("backprop-lab")
    assert experiment.artifact_location == (tmp_path / "store" / "mlartifacts").as_uri()
    assert not (tmp_path / "mlruns").exists()  # nothing in the working directory's ./mlruns

    parents, jobs = split_roles(runs_of(client))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    assert sorted(r.info.run_name for r in jobs) == ["relu", "sigmoid", "tanh"]
    for run in jobs:
        tags, params = run.data.tags, run.data.params
        assert run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent_id
        assert tags["backprop_lab.outcome"] == "finished"
        assert f"activation={run.info.run_name}" in tags["hydra.overrides"]
        assert tags["choice.dataset"] == "spiral" and tags["choice.model"] == "mlp"
        assert tags["choice.optimizer"] == "gd"
        assert tags["git.commit"] and tags["git.dirty"] in ("true", "false", "none")
        # the whole resolved config, flattened, plus the derived net.* params
        assert params["activation"] == run.info.run_name
        assert params["model.hidden.0"] == "16" and params["model.hidden.1"] == "8"
        assert params["optimizer.lr"] == "0.5" and params["epochs"] == str(epochs)
        assert params["dataset.name"] == "spiral" and params["model.name"] == "mlp"
        assert params["net.n_layers"] == "3" and params["net.depth"] == "2"
        assert params["net.width"] == "16"
        assert params["net.init"] == ("he" if run.info.run_name == "relu" else "lecun")
        assert params["net.repr"].startswith("MLP(2-16-8-1")
        # every metric with its full per-epoch history, step = epoch (0 = initialization)
        assert set(run.data.metrics) == expected_metrics(3) | SUMMARY
        for key in set(run.data.metrics) - SUMMARY:  # the summary: tests/test_run_summary.py
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(epochs + 1)), key
        paths = artifact_paths(client, run.info.run_id)
        assert paths >= {"config.yaml", "hydra/config.yaml", "hydra/overrides.yaml",
                         "weights.npz", "history.csv", "histograms.npz"}
        assert not any(p.startswith("figures") for p in paths)  # sweeps: figures on demand
    assert {"runs.csv", "multirun.yaml"} <= artifact_paths(client, parent_id)
    history = pd.read_csv(client.download_artifacts(jobs[0].info.run_id, "history.csv",
                                                    str(tmp_path)), index_col="epoch")
    assert list(history.index) == list(range(epochs + 1))
    assert set(history.columns) == expected_metrics(3, log10=False)

    out = result.stdout
    for name in ("sigmoid", "tanh", "relu"):
        assert f"[finished] {name}:" in out  # the one-line summary of each run
    assert "L1/LL init" in out and "val acc" in out  # the multirun's table
    assert f"mlflow ui --backend-store-uri {store} --host 127.0.0.1" in out


def test_seed_notebook_reproduces_the_notebook(run_cli, store, client_for):
    # 100 epochs cover the notebook's "Epoch 100" line; test_cli_slow runs all 1000.
    result = run_cli("experiment=seed_notebook", "epochs=100", f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    client = client_for(store)
    parents, jobs = split_roles(runs_of(client))
    assert parents == [] and len(jobs) == 1
    run = jobs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "seed_notebook-epochs100"
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.params["rng"] == "legacy"
    assert float(run.data.params["dataset.val_fraction"]) == 0.0
    assert set(run.data.metrics) == expected_metrics(3, val=False) | SUMMARY  # no validation
    loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert sorted(loss) == list(range(101))
    # The notebook prints its 0-based epoch 99 as "Epoch 100 - Loss: 0.0972 - Accuracy: 0.9900".
    assert loss[99] == pytest.approx(0.0972, rel=0.02)
    accuracy = client.get_metric_history(run.info.run_id, "train/accuracy")
    assert {m.step: m.value for m in accuracy}[99] == pytest.approx(0.99, abs=0.0025)
    assert {"figures/curves.png", "figures/decision_boundary.png"} <= artifact_paths(
        client, run.info.run_id)


def test_joblib_launcher_on_a_fresh_store_loses_no_job(run_cli, store, client_for, tmp_path):
    assert not (tmp_path / "store").exists()
    # Two workers start at once on a store that does not exist yet (when each worker ran
    # MLflow's schema migrations itself, they crashed with "duplicate column name: step" and
    # lost runs).
    result = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "activation=tanh,relu", "seed=0,1", "epochs=2", "figures=false",
                     f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    parents, jobs = split_roles(runs_of(client_for(store)))
    assert len(parents) == 1 and len(jobs) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parents[0].info.run_id}
    assert {r.info.status for r in jobs} == {"FINISHED"}
    assert sorted(r.info.run_name for r in jobs) == sorted(
        f"{a}-seed{s}" for a in ("tanh", "relu") for s in (0, 1))


def test_two_sweeps_started_together_on_a_new_store_both_complete(tmp_path, store,
                                                                  client_for):
    """Two sweeps launched at the same moment into one SQLite store that does not exist yet
    (each a parent and three children, writing blocks while the other does): both exit 0, and
    every value of every run is in the store, equal to the run's history.csv."""
    epochs = 300
    procs = []
    for name in ("a", "b"):
        command = [sys.executable, str(TRAIN), "-m", "activation=sigmoid,tanh,relu",
                   f"epochs={epochs}", "progress=false", f"tracking.uri={store}",
                   f"hydra.sweep.dir={tmp_path / name}"]
        procs.append(subprocess.Popen(command, cwd=tmp_path, env=cli_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outputs]
    client = client_for(store)
    parents, jobs = split_roles(runs_of(client))
    assert len(parents) == 2 and len(jobs) == 6
    assert {r.info.status for r in parents + jobs} == {"FINISHED"}
    for run in jobs:
        folder = run.data.tags["backprop_lab.output_dir"]
        saved = pd.read_csv(f"{folder}/history.csv", index_col="epoch")
        assert len(saved) == epochs + 1
        for key in ("train/loss", layer_metric_name("grad_norm", 1),
                    layer_metric_name("saturation", 3)):
            logged = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in logged] == list(range(epochs + 1)), key
            assert [m.value for m in logged] == pytest.approx(saved[key].tolist(), rel=1e-8,
                                                              nan_ok=True)


def test_a_tracked_sweep_imports_no_mlflow_pandas_or_matplotlib(tmp_path, store):
    """Into a SQLite store, a sweep needs neither MLflow's client nor pandas nor matplotlib
    (figures are rendered on demand in sweeps): none of them is imported."""
    command = [sys.executable, "-X", "importtime", str(TRAIN), "-m", "activation=tanh,relu",
               "epochs=3", f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    done = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "backprop_lab" in imported and "numpy" in imported  # the check sees imports
    assert not imported & {"mlflow", "pandas", "matplotlib", "sklearn", "numba", "sqlalchemy"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["activation=swish"], ["swish", "sigmoid, tanh, relu"]),
        (["-m", "activation=tanh,swish"], ["swish", "sigmoid, tanh, relu"]),
        (["optimizer.lr=-1"], ["optimizer.lr=-1", "positive"]),
        (["-m", "optimizer.lr=0.5,-1"], ["optimizer.lr=-1", "positive"]),
        (["model.hidden=[0]"], ["model.hidden=[0]", "every layer width must be at least 1"]),
        (["dataset=unknown"], ["dataset/unknown", "spiral"]),
        (["dataset.name=unknown"], ["unknown", "spiral, moons"]),
    ],
    ids=["activation", "activation-sweep", "lr", "lr-sweep", "hidden", "dataset", "dataset.name"],
)
def test_bad_override_fails_before_any_run(run_cli, store, client_for, tmp_path, args, expected):
    result = run_cli(*args, "epochs=2", f"tracking.uri={store}")
    assert result.returncode != 0
    message = result.stderr + result.stdout
    for text in expected:
        assert text in message, message
    # no run, no parent run: the store was not even created
    assert not (tmp_path / "store" / "mlflow.db").exists() or runs_of(client_for(store)) == []


def test_diverging_job_is_failed_and_its_sibling_finishes(run_cli, store, client_for):
    result = run_cli("-m", "model=deep", "model.depth=5", "activation=identity",
                     "optimizer.lr=0.01,1e6", "epochs=10", "figures=false", f"tracking.uri={store}")
    assert result.returncode != 0  # the exit status says that a job failed
    assert "1 of 2 jobs did not finish" in result.stderr
    parents, jobs = split_roles(runs_of(client_for(store)))
    by_name = {r.info.run_name: r for r in jobs}
    assert set(by_name) == {"lr0.01", "lr1000000.0"}
    assert by_name["lr0.01"].info.status == "FINISHED"
    diverged = by_name["lr1000000.0"]
    assert diverged.info.status == "FAILED"
    assert diverged.data.tags["backprop_lab.outcome"] == "diverged"
    assert "not finite" in diverged.data.tags["backprop_lab.failure_reason"]
    assert not math.isfinite(diverged.data.metrics["train/loss"])  # kept what was logged
    assert parents[0].info.status == "FAILED"
    assert parents[0].data.tags["backprop_lab.n_failed"] == "1"


def test_relative_store_from_env_resolves_against_the_working_directory(run_cli, tmp_path,
                                                                        client_for):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("-m", "activation=tanh,relu", "epochs=2", "figures=false",
                     cwd=elsewhere, MLFLOW_TRACKING_URI="sqlite:///rel.db")
    assert result.returncode == 0, result.stderr
    uri = f"sqlite:///{elsewhere / 'rel.db'}"
    assert (elsewhere / "rel.db").exists() and (elsewhere / "mlartifacts").is_dir()
    assert not (elsewhere / "mlruns").exists()
    parents, jobs = split_roles(runs_of(client_for(uri)))
    assert len(parents) == 1 and len(jobs) == 2


def test_tracking_none_trains_without_a_store(run_cli, tmp_path):
    result = run_cli("tracking=none", "epochs=3")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    assert {"history.csv", "weights.npz", "config.yaml", "summary.json"} <= {
        p.name for p in run_dir.iterdir()}
    assert (run_dir / "figures" / "curves.png").exists()
    assert not list(tmp_path.glob("**/*.db")) and not (tmp_path / "mlruns").exists()
    # Where the job's time went (the study benchmark adds these up): parts of its seconds.
    summary = json.loads((run_dir / "summary.json").read_text())
    parts = [summary[k] for k in ("seconds_setup", "seconds_training", "seconds_outputs")]
    assert all(p > 0 for p in parts), summary
    assert sum(parts) <= summary["seconds"]
    assert summary["seconds_metric_logging"] is None  # no store, nothing logged


def test_vanishing_gradients_experiment_smoke(run_cli):
    # The real study is 36 runs; here 3 activations x 2 depths, 2 epochs, no tracking.
    result = run_cli("-m", "experiment=vanishing_gradients", "epochs=2", "seed=0",
                     "model.depth=2,3", "tracking=none", "figures=false")
    assert result.returncode == 0, result.stderr
    for name in ("sigmoid-depth2", "tanh-depth3", "relu-depth3"):
        assert f"[finished] {name}:" in result.stdout


def test_ctrl_c_marks_the_run_killed_and_keeps_its_metrics(tmp_path, store, client_for):
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), "epochs=1000000", "figures=false", "progress=false",
         f"tracking.uri={store}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        run = None
        while time.monotonic() < deadline and proc.poll() is None:
            # .hydra/ appears once the launching process has created and migrated the store
            # (reading a store while it is being migrated would race with the migration).
            if (tmp_path / "run" / ".hydra").exists():
                runs = runs_of(client_for(store))
                if runs and runs[0].data.metrics:
                    run = runs[0]
                    break
            time.sleep(0.5)
        assert run is not None, "the run never logged metrics"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    run = client_for(store).get_run(run.info.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["backprop_lab.outcome"] == "killed"
    logged = client_for(store).get_metric_history(run.info.run_id, "train/loss")
    history = pd.read_csv(tmp_path / "run" / "history.csv", index_col="epoch")
    assert len(logged) == len(history) > 0  # everything recorded was flushed
