"""A run at a glance: the ``vanishing/`` metrics, chance, the sweep's names and tables.

Unit tests of engine/run_summary.py and of the harness's names and tables; the end-to-end test
runs ``train.py`` into a real SQLite store and reads the metrics and names back with MLflow's
client (tests/test_cli_tracking.py has the rest of the store's contract).
"""

from __future__ import annotations

import math
import re
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from backprop_lab.engine import run_summary as rs
from backprop_lab.engine.history import History, layer_metric_name
from backprop_lab.engine.theory import mean_field
from backprop_lab.harness.job_context import run_name, sweep_name
from backprop_lab.harness.progress import runs_table, summary_line
from backprop_lab.harness.sweep_summary import description

NAMES = {rs.LOG10_RATIO_INIT, rs.LOG10_RATIO_END, rs.MEASURED_FACTOR_INIT, rs.THEORY_FACTOR,
         rs.AT_CHANCE}


# -- chance ---------------------------------------------------------------------------------------
def test_chance_is_the_majority_share_with_two_standard_errors() -> None:
    chance = rs.Chance.of_labels(np.array([0] * 46 + [1] * 34))
    assert chance.accuracy == pytest.approx(46 / 80)
    assert chance.tolerance == pytest.approx(2 * math.sqrt(46 / 80 * 34 / 80 / 80))
    assert chance.samples == 80
    assert chance.at_chance(0.4) and chance.at_chance(chance.threshold)
    assert not chance.at_chance(chance.threshold + 1e-9)
    assert not chance.at_chance(math.nan) and not chance.at_chance(None)


def test_chance_of_the_engines_targets_binary_and_one_hot() -> None:
    binary = np.array([[1.0, 0.0, 1.0, 1.0]])  # (1, n): one 0/1 row for two classes
    assert rs.Chance.of_targets(binary).accuracy == pytest.approx(0.75)
    one_hot = np.eye(3)[:, [0, 1, 2, 2, 2]]  # (3, n)
    assert rs.Chance.of_targets(one_hot).accuracy == pytest.approx(0.6)
    uniform = rs.Chance.uniform(10)
    assert uniform.accuracy == pytest.approx(0.1)
    assert uniform.tolerance == rs.CHANCE_TOLERANCE_UNKNOWN_N
    with pytest.raises(ValueError, match="at least 2 classes"):
        rs.Chance.uniform(1)


# -- the vanishing summary ------------------------------------------------------------------------
def _history(rows: int, layers: int) -> History:
    history = History(rows, layers, has_val=True, diagnostics=True)
    history.n_rows = rows
    history.scalars["val/accuracy"][:] = 0.5
    return history


def test_vanishing_summary_from_a_history() -> None:
    history = _history(4, 4)
    history.layers["grad_norm"][0] = [1e-6, 1e-4, 1e-2, 1.0]
    history.layers["grad_norm"][3] = [0.5, 1, 1, 2.0]
    history.layers["delta_std"][0] = [0.01, 0.1, 1.0, 5.0]  # factor 0.1 a hidden step
    chance = rs.Chance(0.5, 0.1)
    out = rs.vanishing_summary(history, theory=0.25, chance=chance)
    assert set(out) == NAMES
    assert out[rs.LOG10_RATIO_INIT] == (0, pytest.approx(-6.0))
    assert out[rs.LOG10_RATIO_END] == (3, pytest.approx(math.log10(0.25)))
    assert out[rs.MEASURED_FACTOR_INIT] == (0, pytest.approx(0.1))
    assert out[rs.THEORY_FACTOR] == (0, 0.25)
    assert out[rs.AT_CHANCE] == (3, 1.0)
    history.scalars["val/accuracy"][3] = 0.9
    assert rs.vanishing_summary(history, chance=chance)[rs.AT_CHANCE] == (3, 0.0)


def test_a_diverged_run_logs_what_it_can() -> None:
    history = _history(3, 3)
    history.layers["grad_norm"][0] = [0.1, 0.5, 1.0]
    history.layers["grad_norm"][2] = [np.inf, np.nan, 1.0]
    history.layers["delta_std"][0] = [0.1, 0.5, 1.0]
    history.scalars["val/accuracy"][2] = np.nan
    history.scalars["train/accuracy"][2] = np.nan
    out = rs.vanishing_summary(history, chance=rs.Chance(0.5, 0.1))
    assert set(out) == {rs.LOG10_RATIO_INIT, rs.MEASURED_FACTOR_INIT}
    assert rs.vanishing_summary(_history(0, 3)) == {}
    assert rs.vanishing_summary(None) == {}


def test_theory_factor_is_the_geometric_mean_of_mean_fields_hidden_steps() -> None:
    sizes = [2, 32, 32, 32, 32, 1]
    factors = mean_field("tanh", "lecun", sizes, input_var=0.9).std_factors[:3]
    assert rs.theory_factor("tanh", "lecun", sizes, 0.9) == pytest.approx(
        float(np.exp(np.log(factors).mean())))
    assert math.isnan(rs.theory_factor("tanh", "lecun", [2, 16, 1]))  # no hidden step
    assert math.isnan(rs.measured_factor(np.array([1.0, 2.0])))


# -- names ----------------------------------------------------------------------------------------
def test_sweep_names_say_what_the_command_fixed_and_when() -> None:
    when = datetime(2026, 12, 7, 14, 3)
    assert sweep_name(None, ["activation=sigmoid,tanh,relu"], ["activation"], when) == (
        "activation=sigmoid,tanh,relu 12-07 14:03")
    cli = ["activation=sigmoid,tanh,relu", "model=deep", "model.depth=10", "epochs=300",
           "tracking.uri=sqlite:///x.db", "progress=false"]
    assert sweep_name(None, cli, ["activation"], when) == (
        "model=deep model.depth=10 epochs=300 activation=sigmoid,tanh,relu 12-07 14:03")
    assert sweep_name("vanishing_gradients", ["experiment=vanishing_gradients"], [], when) == (
        "vanishing_gradients 12-07 14:03")
    assert sweep_name("vanishing_gradients", ["experiment=vanishing_gradients", "seed=0"],
                      ["activation", "model.depth"], when) == "vanishing_gradients seed=0 12-07 14:03"
    assert sweep_name(None, [], [], when) == "sweep 12-07 14:03"
    # children keep the values that differ
    assert run_name(["activation=tanh", "model.depth=10"], ["activation", "model.depth"]) == (
        "tanh-depth10")


# -- tables ---------------------------------------------------------------------------------------
def _summaries() -> list[dict]:
    common = {"outcome": "finished", "n_layers": 11, "chance_accuracy": 0.575,
              "chance_tolerance": 0.11, "train_loss": 0.69, "val_loss": 0.7}
    return [
        {**common, "run_name": "sigmoid", "activation": "sigmoid", "val_accuracy": 0.425,
         "grad_ratio_init": 1.38e-6, "grad_ratio": 0.158, "at_chance": True,
         "overrides": ["activation=sigmoid"], "run_id": "a"},
        {**common, "run_name": "relu", "activation": "relu", "val_accuracy": 0.9,
         "grad_ratio_init": 0.123, "grad_ratio": 0.9, "at_chance": False,
         "overrides": ["activation=relu"], "run_id": "b"},
    ]


def test_the_terminal_table_shows_the_ratio_at_init_and_flags_runs_at_chance() -> None:
    table = runs_table(_summaries())
    head, _, sigmoid, relu, note = table.splitlines()
    assert "L1/LL init" in head and "L1/LL end" in head
    assert "1.38e-06" in sigmoid and "0.158 (at chance)" in sigmoid
    assert "0.123" in relu and "at chance" not in relu
    assert note.startswith("at chance:") and "0.575 + 0.11" in note
    assert "at chance" not in runs_table(_summaries()[1:])
    line = summary_line(_summaries()[0])
    assert "grad L1/L11 init 1.38e-06, end 0.158 (at chance)" in line


def test_the_parents_description_shows_the_ratio_at_init_and_flags_runs_at_chance(
        tmp_path) -> None:
    text = description(title="activation=sigmoid,relu 12-07 14:03", command="python train.py",
                       summaries=_summaries(), swept=["activation"], experiment_id="1",
                       sweep_dir=tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert "L1/LL init" in rows[0] and "L1/LL end" in rows[0]
    assert "1.38e-06" in rows[2] and "0.158 (at chance)" in rows[2]
    assert "at chance: final accuracy within 2 standard errors" in text


# -- end to end: the real CLI into a real SQLite store ---------------------------------------------
def test_every_run_logs_its_vanishing_summary_and_the_parent_is_named_for_its_command(
        run_cli, store, client_for, tmp_path) -> None:
    from backprop_lab.analysis.loading import run_chance

    result = run_cli("-m", "model=deep", "model.depth=3", "model.width=8", "epochs=6",
                     "seed=0", "activation=sigmoid,identity", "optimizer.lr=0.05,1e6",
                     "figures=false", f"tracking.uri={store}")
    assert result.returncode == 1, result.stderr  # the lr=1e6 jobs diverge
    client = client_for(store)
    experiment = client.get_experiment_by_name("backprop-lab").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get("backprop_lab.role") == "sweep"]
    jobs = {r.info.run_name: r for r in runs if r.data.tags.get("backprop_lab.role") == "job"}
    assert len(parents) == 1
    assert re.fullmatch(r"model=deep model\.depth=3 model\.width=8 epochs=6 seed=0 "
                        r"activation=sigmoid,identity optimizer\.lr=0\.05,1e6 "
                        r"\d\d-\d\d \d\d:\d\d", parents[0].info.run_name), parents[0].info.run_name
    assert set(jobs) == {"sigmoid-lr0.05", "sigmoid-lr1000000.0", "identity-lr0.05",
                         "identity-lr1000000.0"}
    note = parents[0].data.tags["mlflow.note.content"]
    assert "L1/LL init" in note and "L1/LL end" in note
    assert "L1/LL init" in result.stdout and "L1/LL end" in result.stdout

    for name, run in jobs.items():
        metrics, params = run.data.metrics, run.data.params
        history = pd.read_csv(client.download_artifacts(run.info.run_id, "history.csv",
                                                        str(tmp_path / name)), index_col="epoch")
        g = [layer_metric_name("grad_norm", layer) for layer in (1, 4)]
        ratio_init = math.log10(history.loc[0, g[0]] / history.loc[0, g[1]])
        assert metrics[rs.LOG10_RATIO_INIT] == pytest.approx(ratio_init, rel=1e-7), name
        d = [history.loc[0, layer_metric_name("delta_std", layer)] for layer in (1, 2, 3)]
        assert metrics[rs.MEASURED_FACTOR_INIT] == pytest.approx(
            math.sqrt(d[0] / d[1] * d[1] / d[2]), rel=1e-7), name
        sizes = re.match(r"MLP\(([\d-]+)", params["net.repr"])[1].split("-")
        assert metrics[rs.THEORY_FACTOR] == pytest.approx(rs.theory_factor(
            params["activation"], params["net.init"], sizes, float(params["data.input_var"])))
        steps = {key: [m.step for m in client.get_metric_history(run.info.run_id, key)]
                 for key in NAMES if key in metrics}
        assert all(steps[k] == [0] for k in rs.AT_INIT), (name, steps)
        last = int(history.index[-1])
        assert all(steps[k] == [last] for k in rs.AT_END if k in steps), (name, steps)
        # The end's ratio where both norms are > 0 and finite (a saturated or diverged network
        # may have none): logged exactly then, left out otherwise.
        first_end, last_end = history.loc[last, g[0]], history.loc[last, g[1]]
        if np.isfinite([first_end, last_end]).all() and min(first_end, last_end) > 0:
            assert metrics[rs.LOG10_RATIO_END] == pytest.approx(
                math.log10(first_end / last_end), rel=1e-7), name
        else:
            assert rs.LOG10_RATIO_END not in metrics, name
        if run.data.tags["backprop_lab.outcome"] == "diverged":
            assert rs.AT_CHANCE not in metrics or math.isfinite(metrics["val/accuracy"]), name
            continue
        chance = run_chance({"chance_accuracy": float(params["data.chance_accuracy"]),
                             "chance_tolerance": float(params["data.chance_tolerance"])})
        assert metrics[rs.AT_CHANCE] == float(chance.at_chance(metrics["val/accuracy"]))
        assert {rs.LOG10_RATIO_INIT, rs.MEASURED_FACTOR_INIT, rs.THEORY_FACTOR} <= set(metrics)
    # the runs table sorts by it: most vanished first
    ordered = client.search_runs([experiment], "tags.`backprop_lab.role` = 'job'",
                                 order_by=[f"metrics.`{rs.LOG10_RATIO_INIT}` ASC"])
    values = [r.data.metrics[rs.LOG10_RATIO_INIT] for r in ordered]
    assert values == sorted(values) and values[0] < -1  # sigmoid, 4 weight layers


def test_a_single_run_logs_its_vanishing_summary(run_cli, store, client_for) -> None:
    result = run_cli("epochs=3", "figures=false",
                     f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    client = client_for(store)
    (run,) = client.search_runs([client.get_experiment_by_name("backprop-lab").experiment_id])
    assert NAMES <= set(run.data.metrics)
    assert "grad L1/L3 init" in result.stdout


# -- the log10 companions: every k-th epoch, in the same write ------------------------------------
class _BlockBackend:
    """Records each write: a list of blocks (one write = one transaction on SQLite)."""

    uri = "fake://"

    def __init__(self) -> None:
        self.writes: list[list[tuple]] = []

    def log_metrics(self, run_id, names, steps, values, timestamps) -> None:
        self.writes.append([(list(names), steps.copy(), values.copy(), timestamps.copy())])

    def log_metric_blocks(self, run_id, blocks) -> None:
        self.writes.append([(list(n), s.copy(), v.copy(), t.copy()) for n, s, v, t in blocks])


def test_companions_follow_every_kth_epoch_and_the_last_in_the_same_write() -> None:
    from backprop_lab.tracking.run_tracker import COMPANION_POINTS, RunTracker

    rows = 1001  # the flagship: 1000 epochs
    history = History(rows, 3, has_val=True, diagnostics=True)
    for values in history.layers.values():
        values[:] = 10.0 ** -np.arange(rows)[:, None] % 7 + 1
    backend = _BlockBackend()
    tracker = RunTracker(backend, "run")
    tracker.on_train_start(None, None, history)
    for epoch in range(rows):
        history.n_rows = epoch + 1
        tracker.on_epoch_end(epoch, history)
    summary = ([rs.LOG10_RATIO_INIT], np.array([0]), np.array([[-1.0]]), np.array([1]))
    tracker.flush(final=True, extra=[summary])
    steps: dict[str, list[int]] = {}
    for write in backend.writes:
        for names, block_steps, _, _ in write:
            for name in names:
                steps.setdefault(name, []).extend(block_steps.tolist())
    every = -(-rows // COMPANION_POINTS)
    companion = steps[layer_metric_name("delta_std_log10", 2)]
    assert companion == list(range(0, rows, every)) and companion[-1] == rows - 1
    assert steps[layer_metric_name("delta_std", 2)] == list(range(rows))  # plain: every epoch
    assert steps[rs.LOG10_RATIO_INIT] == [0]
    # the companions and the summary never cost a write of their own: every write leads with
    # the plain metrics' block, and the summary rides with the last one
    assert all(write[0][0][0] == "train/loss" for write in backend.writes)
    assert len(backend.writes) > 1 and any(len(write) > 1 for write in backend.writes)
    assert summary[0] in [names for names, _, _, _ in backend.writes[-1]]


def test_sqlite_writes_several_blocks_in_one_transaction(tmp_path) -> None:
    import sqlite3
    import uuid

    from mlflow import MlflowClient

    from backprop_lab.tracking.sqlite_store import SqliteStore

    store = SqliteStore(tmp_path / "mlflow.db")
    experiment = store.ensure_experiment("e", None)
    run_id = uuid.uuid4().hex
    store.create_run(run_id, experiment, "r",
                     store.artifact_uri(store.artifact_location(experiment), run_id), {}, {})
    commits = []
    store.con.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    store.log_metric_blocks(run_id, [
        (["a", "b"], np.array([0, 1, 2]), np.arange(6.0).reshape(2, 3), np.array([5, 6, 7])),
        (["a_log10"], np.array([0, 2]), np.array([[-1.0, -2.0]]), np.array([5, 7])),
    ])
    assert commits == ["COMMIT"]
    store.close()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "a_log10")] == [
        (0, -1.0), (2, -2.0)]
    assert client.get_run(run_id).data.metrics == {"a": 2.0, "b": 5.0, "a_log10": -2.0}
    assert sqlite3.connect(tmp_path / "mlflow.db").execute(
        "SELECT COUNT(*) FROM metrics").fetchone() == (8,)
