"""Load the runs of an MLflow experiment or of one sweep into pandas.

Two tables come out of a store:

- the *runs* table (:func:`runs_table`), one row per run: its config choices (activation,
  depth, init, seed, ...), its final metrics and its status;
- the *histories* table (:func:`.histories.load_histories`), tidy and long: one row per (run,
  epoch, layer, metric) with the run's identifying columns repeated, ready for seaborn.

:func:`load_sweep` gives both for a sweep (a parent run) or a whole experiment, from a SQLite
file or a tracking server alike.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass, field

from backprop_lab.contract import (
    OUTCOME_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SWEPT_KEYS_TAG,
    default_tracking_uri,
)

# mlflow imports tqdm.auto, which warns in a Jupyter kernel without ipywidgets; we show no bars.
warnings.filterwarnings("ignore", message="IProgress not found")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Run, ViewType  # noqa: E402

from backprop_lab.engine import run_summary as rs  # noqa: E402

from .chance import at_chance, run_chance  # noqa: E402,F401 - re-exported
from .flow_records import make_label  # noqa: E402
from .histories import ID_COLUMNS, LAYER_KEY, load_histories  # noqa: E402

__all__ = ["ID_COLUMNS", "SettingsDiffer", "SweepData", "default_tracking_uri",
           "describe_differences", "list_sweeps", "load_histories", "load_sweep",
           "runs_table", "select_runs", "setting_differences"]

DEFAULT_EXPERIMENT = "backprop-lab"

# Columns of the runs table taken from params, with their types; (column, param keys tried in
# order, converter). Missing params give missing values rather than errors, so older or partial
# runs still load.
_PARAM_COLUMNS = (
    ("activation", ("activation",), str),
    ("depth", ("net.depth", "model.depth"), int),
    ("n_layers", ("net.n_layers",), int),
    ("width", ("net.width", "model.width"), int),
    ("init", ("net.init", "model.init"), str),
    ("init_requested", ("model.init",), str),
    ("seed", ("seed",), int),
    ("dataset", ("dataset.name",), str),
    ("model", ("model.name",), str),
    ("optimizer", ("optimizer.name",), str),
    ("lr", ("optimizer.lr",), float),
    ("batch_size", ("optimizer.batch_size",), int),
    ("epochs", ("epochs",), int),
    ("net", ("net.repr",), str),
    ("input_var", ("data.input_var",), float),  # q^0 of mean-field theory
    ("sigma_w2", ("net.sigma_w2", "model.sigma_w2"), float),  # fan_in Var(W)
    ("sigma_b2", ("net.sigma_b2", "model.sigma_b2"), float),  # Var(b)
    ("n_classes", ("data.n_classes",), int),
    ("chance_accuracy", ("data.chance_accuracy",), float),  # engine/run_summary.py
    ("chance_tolerance", ("data.chance_tolerance",), float),
)
#: Params that are not settings of what is trained (how a run is recorded or shown) or that
#: follow from other settings (``net.*``, ``data.*``: derived by the harness); left out when
#: comparing settings between runs or sweeps.
NOT_SETTINGS = ("tracking.", "progress", "figures", "threads", "histogram_every", "net.",
                "data.", "report", "diagnostics")
#: What the analysis itself tells apart or averages over: differences in these are expected.
COMPARED = ("activation", "model.depth", "seed", "model.init")
FINAL_METRICS = ("train/loss", "train/accuracy", "val/loss", "val/accuracy")
#: The run's end-of-run summary (engine/run_summary.py), when it logged one.
SUMMARY_METRICS = (rs.LOG10_RATIO_INIT, rs.LOG10_RATIO_END, rs.MEASURED_FACTOR_INIT,
                   rs.THEORY_FACTOR)


@dataclass
class SweepData:
    """Runs and histories of one selection, with where they came from.

    ``runs``: one row per run (see :func:`runs_table`); ``histories``: the long table of
    :func:`load_histories`; ``sweep_id`` is None when the selection is a whole experiment.
    """

    uri: str
    experiment_ids: list[str]
    sweep_id: str | None
    sweep_name: str | None
    runs: pd.DataFrame
    histories: pd.DataFrame
    load_seconds: dict[str, float] = field(default_factory=dict)
    #: Every sweep selected (several when a list of sweeps was asked for), ids and names.
    sweep_ids: list[str] = field(default_factory=list)
    sweep_names: list[str] = field(default_factory=list)
    #: Settings that differ between the runs besides what the analysis compares (see
    #: :func:`setting_differences`): key -> the distinct values, as text.
    differences: dict[str, list[str]] = field(default_factory=dict)

    def __repr__(self) -> str:
        if len(self.sweep_ids) > 1:
            what = f"{len(self.sweep_ids)} sweeps {self.sweep_names!r}"
        else:
            what = (f"sweep {self.sweep_name!r} ({self.sweep_id})" if self.sweep_id
                    else "experiment")
        return (
            f"SweepData({what}, {len(self.runs)} runs, {len(self.histories)} history rows, "
            f"{self.uri})"
        )


def _search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str = "",
                order_by: list[str] | None = None) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            order_by=order_by,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment_ids(client: MlflowClient, experiment: str | None) -> list[str]:
    if experiment is None:
        return [e.experiment_id for e in client.search_experiments(ViewType.ACTIVE_ONLY)]
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            found = client.get_experiment(experiment)
        except Exception:  # noqa: BLE001 - MLflow raises different types per store
            found = None
    if found is None:
        names = [e.name for e in client.search_experiments(ViewType.ACTIVE_ONLY)]
        raise ValueError(f"no experiment {experiment!r} in the store; experiments: {names}")
    return [found.experiment_id]


def list_sweeps(uri: str | None = None, experiment: str | None = None) -> pd.DataFrame:
    """The sweeps (parent runs) of a store, newest first: run_id, name, start time, status."""
    client = MlflowClient(tracking_uri=uri or default_tracking_uri())
    ids = _experiment_ids(client, experiment)
    parents = _search_all(
        client, ids, f"tags.`{ROLE_TAG}` = 'sweep'", order_by=["attributes.start_time DESC"]
    )
    return pd.DataFrame(
        {
            "run_id": [r.info.run_id for r in parents],
            "name": [r.info.run_name for r in parents],
            "experiment_id": [r.info.experiment_id for r in parents],
            "start_time": pd.to_datetime([r.info.start_time for r in parents], unit="ms"),
            "status": [r.info.status for r in parents],
        }
    )


def select_runs(
    uri: str | None = None, experiment: str | None = None, sweep: str | None = "latest"
) -> tuple[MlflowClient, list[str], Run | None, list[Run]]:
    """Find the job runs to analyse.

    ``sweep``: a parent run id, ``"latest"`` (the newest sweep of the experiment, or of the whole
    store when ``experiment`` is None) or None (every job run of the experiment, any sweep).
    Returns (client, experiment ids, parent run or None, job runs oldest first).
    """
    client = MlflowClient(tracking_uri=uri or default_tracking_uri())
    experiment_ids = _experiment_ids(client, experiment)
    if sweep is None:
        runs = _search_all(client, experiment_ids, order_by=["attributes.start_time ASC"])
        jobs = [r for r in runs if r.data.tags.get(ROLE_TAG) != "sweep"]
        return client, experiment_ids, None, jobs
    if sweep == "latest":
        found = _search_all(
            client,
            experiment_ids,
            f"tags.`{ROLE_TAG}` = 'sweep'",
            order_by=["attributes.start_time DESC"],
        )
        if not found:
            raise ValueError(
                f"no sweep (run tagged {ROLE_TAG}=sweep) in experiment(s) {experiment_ids} of "
                f"{client.tracking_uri}; run `python train.py -m ...` first or pass sweep=None"
            )
        parent = found[0]
    else:
        parent = client.get_run(sweep)
    experiment_ids = [parent.info.experiment_id]
    jobs = _search_all(
        client,
        experiment_ids,
        f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    return client, experiment_ids, parent, jobs


def _convert(value: str | None, kind: type):
    if value is None or value in ("None", "null", ""):
        return np.nan if kind is not str else None
    if kind is str:
        return value
    try:
        return kind(float(value)) if kind is int else kind(value)
    except ValueError:
        return np.nan


def _layer_sizes(params: dict[str, str]) -> str | None:
    """Layer widths input-hidden...-output as in the network's repr, e.g. ``"2-16-8-1"``: read
    from ``net.repr`` (``MLP(2-16-8-1, tanh, lecun)``), else from the model params (without
    the input and output widths, which only the data set knows: ``"?-32-32-?"``)."""
    found = re.match(r"^\w+\((\d+(?:-\d+)+)", params.get("net.repr", ""))
    if found:
        return found[1]
    hidden = [params[k] for k in sorted((k for k in params if k.startswith("model.hidden.")),
                                        key=lambda k: int(k.rsplit(".", 1)[1]))]
    if not hidden and "model.depth" in params and "model.width" in params:
        hidden = [params["model.width"]] * int(params["model.depth"])
    return "-".join(["?", *hidden, "?"]) if hidden else None


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: id, name, status, outcome, config choices, final metrics, duration."""
    rows = []
    for run in runs:
        params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
        row: dict = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "sweep_id": tags.get(PARENT_TAG),
            "status": run.info.status,
            "outcome": tags.get(OUTCOME_TAG),
            "failure_reason": tags.get("backprop_lab.failure_reason"),
        }
        for column, keys, kind in _PARAM_COLUMNS:
            raw = next((params[k] for k in keys if k in params), None)
            row[column] = _convert(raw, kind)
        if pd.isna(row["n_layers"]):
            layers = [int(m["layer"]) for k in metrics if (m := LAYER_KEY.match(k))]
            row["n_layers"] = max(layers) if layers else np.nan
        if pd.isna(row["depth"]) and not pd.isna(row["n_layers"]):
            row["depth"] = row["n_layers"] - 1
        row["sizes"] = _layer_sizes(params)
        row["label"] = make_label(row["activation"], row["init"])
        for key in (*FINAL_METRICS, *SUMMARY_METRICS):
            row[key] = metrics.get(key, np.nan)
        row["at_chance"] = at_chance(row)
        start, end = run.info.start_time, run.info.end_time
        row["start_time"] = pd.to_datetime(start, unit="ms") if start else pd.NaT
        row["seconds"] = (end - start) / 1000 if start and end else np.nan
        row["overrides"] = tags.get("hydra.overrides")
        rows.append(row)
    columns = ["run_id", "run_name", "sweep_id", "status", "outcome", "failure_reason"]
    columns += [c for c, _, _ in _PARAM_COLUMNS] + ["sizes", "label", *FINAL_METRICS,
                                                    *SUMMARY_METRICS, "at_chance"]
    columns += ["start_time", "seconds", "overrides"]
    table = pd.DataFrame(rows, columns=columns)
    for column in ("depth", "n_layers", "width", "seed", "batch_size", "epochs", "n_classes"):
        table[column] = table[column].astype("Int64")
    return table


class SettingsDiffer(UserWarning):
    """The runs loaded together differ in settings besides the ones the analysis compares."""


def _is_setting(key: str, ignore: tuple[str, ...]) -> bool:
    return not key.startswith(NOT_SETTINGS) and key not in ignore


def setting_differences(groups: list[list[Run]], ignore: tuple[str, ...] = ()
                        ) -> dict[str, list[str]]:
    """Settings (params) whose value differs between ``groups`` of runs: within one group
    only the values all its runs share count (what a group varies is its own business), so
    with one group per sweep this names what two sweeps fixed differently; with one group per
    run, what differs between runs. Keys in ``ignore`` and :data:`NOT_SETTINGS` are left out.
    Returns key -> distinct values (a group that lacks the key shows ``-``), sorted by key."""
    fixed: list[dict[str, str]] = []
    for runs in groups:
        if not runs:
            continue
        common = dict(runs[0].data.params)
        for run in runs[1:]:
            common = {k: v for k, v in common.items() if run.data.params.get(k) == v}
        varied = {k for run in runs for k in run.data.params} - set(common)
        fixed.append({**common, **{k: None for k in varied}})
    if len(fixed) < 2:
        return {}
    keys = sorted({k for f in fixed for k in f if _is_setting(k, ignore)})
    out = {}
    for key in keys:
        if any(f.get(key, "-") is None for f in fixed):
            continue  # varied within a group: compared by the analysis, or swept
        values = list(dict.fromkeys(f.get(key, "-") for f in fixed))
        if len(values) > 1:
            out[key] = values
    return out


def describe_differences(differences: dict[str, list[str]]) -> str:
    """``model.depth (10, 2), epochs (300, 1000)``: for warnings and summaries."""
    return ", ".join(f"{k} ({', '.join(map(str, v))})" for k, v in differences.items())


def load_sweep(
    uri: str | None = None, experiment: str | None = None,
    sweep: str | list[str] | tuple[str, ...] | None = "latest", *, source: str = "auto",
) -> SweepData:
    """Runs and histories of one sweep (``sweep``: run id or ``"latest"``), of several
    (a list of those: their runs together) or of a whole experiment (``sweep=None``); ``uri``
    defaults to :func:`default_tracking_uri`.

    Several sweeps, or a whole experiment, may differ in settings besides the ones each sweep
    varies; those are named in a warning and kept in ``differences`` (the report prints them).
    """
    uri = uri or default_tracking_uri()
    start = time.perf_counter()
    wanted = list(sweep) if isinstance(sweep, list | tuple) else [sweep]
    if not wanted:
        raise ValueError("sweep=[]: name at least one sweep (a parent run id or 'latest')")
    if len(wanted) > 1 and None in wanted:
        raise ValueError(f"sweep={wanted!r}: None (every run) cannot be combined with sweeps")
    parents, groups, experiment_ids, client = [], [], [], None
    for one in wanted:
        if one is not None and not isinstance(one, str):
            raise TypeError(f"sweep={one!r}: a parent run id, 'latest' or None, or a list of "
                            "run ids")
        client, ids, parent, jobs = select_runs(uri, experiment, one)
        if parent is not None and parent.info.run_id in {p.info.run_id for p in parents}:
            continue  # the same sweep twice
        parents += [parent] if parent is not None else []
        groups.append(jobs)
        experiment_ids += [i for i in ids if i not in experiment_ids]
    jobs = [run for group in groups for run in group]
    if len(groups) > 1:
        swept = tuple(k for p in parents
                      for k in p.data.tags.get(SWEPT_KEYS_TAG, "").split(",") if k)
        differences = setting_differences(groups, ignore=swept)
        what = "the sweeps"
    elif parents:
        differences = {}
        what = ""
    else:  # every run of the experiment: one group per run
        differences = setting_differences([[run] for run in jobs], ignore=COMPARED)
        what = "the runs"
    if differences:
        warnings.warn(f"{what} differ in settings besides the ones compared: "
                      f"{describe_differences(differences)}", SettingsDiffer, stacklevel=2)
    runs = runs_table(jobs)
    found = time.perf_counter()
    histories = load_histories(client, jobs, runs, source=source)
    done = time.perf_counter()
    first = parents[0] if parents else None
    return SweepData(
        uri=uri,
        experiment_ids=experiment_ids,
        sweep_id=first.info.run_id if first else None,
        sweep_name=(" + ".join(p.info.run_name for p in parents) if parents else None),
        runs=runs,
        histories=histories,
        load_seconds={"runs": found - start, "histories": done - found},
        sweep_ids=[p.info.run_id for p in parents],
        sweep_names=[p.info.run_name for p in parents],
        differences=differences,
    )
