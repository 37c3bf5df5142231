"""Hyper-parameter search (`hydra/sweeper=optuna`, harness/hpo.py) end to end: the real CLI into
a real store, read back with MLflow's client and Optuna's own storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import runs_of, split_roles

SEARCH = ("-m", "hydra/sweeper=optuna", "progress=false", "epochs=60")


def study_trials(store_dir: Path, name: str):
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(store_dir / "optuna-studies.journal")))
    return optuna.load_study(study_name=name, storage=storage).trials


def test_search_children_best_on_parent_pruning_and_resume(run_cli, store, client_for,
                                                           tmp_path):
    args = (*SEARCH, "optimizer.lr=tag(log,interval(0.01,30.0))", f"tracking.uri={store}",
            "hydra.sweeper.pruner=median", "hydra.sweeper.warmup_epochs=5",
            "hydra.sweeper.report_every=5")
    result = run_cli(*args, "hydra.sweeper.n_trials=8")
    assert result.returncode == 0, result.stderr
    assert "Best trials (val/loss, minimize)" in result.stdout
    client = client_for(store)
    parents, jobs = split_roles(runs_of(client))
    assert len(parents) == 1 and len(jobs) == 8
    parent = parents[0]
    assert {j.data.tags["mlflow.parentRunId"] for j in jobs} == {parent.info.run_id}

    # Optuna's record and MLflow's agree trial by trial.
    trials = study_trials(tmp_path / "store", "sweep")
    assert len(trials) == 8
    by_run = {t.user_attrs["run_id"]: t for t in trials}
    for job in jobs:
        trial = by_run[job.info.run_id]
        assert job.data.tags["backprop_lab.optuna.trial"] == str(trial.number)
        assert float(job.data.params["optimizer.lr"]) == trial.params["optimizer.lr"]
        outcome = job.data.tags["backprop_lab.outcome"]
        assert trial.state.name == {"finished": "COMPLETE", "pruned": "PRUNED"}[outcome]
        if outcome == "pruned":
            assert job.info.status == "KILLED"
            # The run keeps its metrics up to the epoch Optuna pruned it at, and its val/loss
            # there is the value Optuna judged.
            epoch = max(trial.intermediate_values)
            reason = job.data.tags["backprop_lab.failure_reason"]
            assert f"pruned by Optuna at epoch {epoch} (" in reason, reason
            logged = {m.step: m.value
                      for m in client.get_metric_history(job.info.run_id, "val/loss")}
            assert max(logged) == epoch
            assert logged[epoch] == pytest.approx(trial.intermediate_values[epoch])
        else:
            assert trial.value == pytest.approx(job.data.metrics["val/loss"])
    assert any(t.state.name == "PRUNED" for t in trials)

    # The parent names the best trial: the finished child with the lowest val/loss.
    finished = [j for j in jobs if j.data.tags["backprop_lab.outcome"] == "finished"]
    best = min(finished, key=lambda j: j.data.metrics["val/loss"])
    assert parent.data.tags["best.run_name"] == best.info.run_name
    assert float(parent.data.tags["best.optimizer.lr"]) == float(best.data.params["optimizer.lr"])
    assert parent.data.metrics["best/val/loss"] == pytest.approx(best.data.metrics["val/loss"])
    assert "best_trials.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    # Resumed: the same command with a larger budget runs only the difference.
    again = run_cli(*args, "hydra.sweeper.n_trials=10")
    assert again.returncode == 0, again.stderr
    assert "2 trial(s) to run" in again.stdout
    assert len(study_trials(tmp_path / "store", "sweep")) == 10
    assert len(split_roles(runs_of(client))[1]) == 10


def test_diverged_trials_are_failed_trials_not_a_crash(run_cli, store, client_for, tmp_path):
    result = run_cli(*SEARCH, "model=deep", "model.depth=5", "activation=identity",
                     "optimizer.lr=interval(1e6,1e7)", f"tracking.uri={store}",
                     "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr
    assert "no trial finished" in result.stdout
    trials = study_trials(tmp_path / "store", "sweep")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert {t.user_attrs["outcome"] for t in trials} == {"diverged"}
    parents, jobs = split_roles(runs_of(client_for(store)))
    assert {j.info.status for j in jobs} == {"FAILED"}
    assert parents[0].info.status == "FINISHED"


@pytest.mark.parametrize(("override", "message"), [
    ("hydra.sweeper.objective=val/los",
     "objective=val/los: must be one of val/loss, val/accuracy, train/loss, train/accuracy"),
    ("hydra.sweeper.pruner=early", "pruner=early: must be one of none, median, hyperband"),
    ("optimizer.lr=interval(-1.0,1.0)", "optimizer.lr=-1.0"),
])
def test_bad_search_settings_fail_before_any_run(run_cli, store, tmp_path, override, message):
    args = [*SEARCH, f"tracking.uri={store}", override]
    if not override.startswith("optimizer.lr"):
        args.append("optimizer.lr=interval(0.01,1.0)")
    result = run_cli(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "store" / "mlflow.db").exists()


def test_a_search_with_nothing_to_search_says_how(run_cli, store):
    result = run_cli(*SEARCH, f"tracking.uri={store}")
    assert result.returncode != 0
    assert "the Optuna sweeper has nothing to search" in result.stderr


def test_tuned_study_reports_best_rates_beside_the_fixed_rate_study(run_cli, store, client_for,
                                                                    tmp_path):
    """experiment=tuned_vanishing_gradients, shrunk: the report on its parent compares each
    activation's best trial with the newest fixed-rate sweep in the store."""
    import pandas as pd

    shrink = ["epochs=40", "model.depth=2", "progress=false", f"tracking.uri={store}"]
    fixed = run_cli("-m", "experiment=vanishing_gradients", "seed=0,1", *shrink)
    assert fixed.returncode == 0, fixed.stderr
    tuned = run_cli("-m", "experiment=tuned_vanishing_gradients", "hydra.sweeper.n_trials=2",
                    "hydra.launcher.n_jobs=1", *shrink)
    assert tuned.returncode == 0, tuned.stderr
    client = client_for(store)
    parent = next(r for r in runs_of(client)
                  if r.info.run_name.startswith("tuned_vanishing_gradients "))
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 3 * 2  # 3 studies (activation; depth fixed) x 2 trials
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "report/comparison.csv",
                                                  str(tmp_path)))
    assert list(table["activation"]) == ["sigmoid", "tanh", "relu"]
    for row in table.to_dict("records"):
        finished = [c for c in children if c.data.params["activation"] == row["activation"]
                    and c.data.tags["backprop_lab.outcome"] == "finished"]
        best = min(finished, key=lambda c: c.data.metrics["val/loss"])
        assert row["tuned lr"] == pytest.approx(float(best.data.params["optimizer.lr"]))
        assert row["tuned val loss"] == pytest.approx(best.data.metrics["val/loss"])
        assert row["fixed lr"] == 0.1 and row["fixed seeds"] == 2
    note = parent.data.tags["mlflow.note.content"]
    assert "**Tuned vs fixed learning rate**" in note and "report/" in note
    assert {"report/comparison.png", "report/summary.md"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "report")}
