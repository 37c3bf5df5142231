"""Activations compared at their own best learning rates (experiment=tuned_vanishing_gradients)
beside the fixed-rate study (experiment=vanishing_gradients, lr 0.1 for every configuration).

The tuned sweep's parent run has best_trials.csv (harness/hpo.py: per activation x depth, the
best trial's learning rate, objective and run); :func:`load_tuned` loads those best runs as a
sweep of their own (the report's usual figures then show the activations at their best rates),
:func:`fixed_rate_study` finds the newest finished fixed-rate sweep in the store, and
:func:`comparison` puts both side by side, one row per activation x depth.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from backprop_lab.contract import ROLE_TAG

FIXED_EXPERIMENT = "vanishing_gradients"
BEST_TRIALS = "best_trials.csv"


def read_best(path: Path) -> pd.DataFrame:
    """best_trials.csv of a search (one row per study)."""
    return pd.read_csv(path)


def load_tuned(uri: str, parent_id: str, best: pd.DataFrame):
    """The best run of every study of the search ``parent_id`` as a SweepData."""
    from backprop_lab.analysis.loading import SweepData, load_histories, runs_table, select_runs

    start = time.perf_counter()
    client, experiment_ids, parent, jobs = select_runs(uri, None, parent_id)
    ids = set(best["best_run_id"].dropna())
    jobs = [r for r in jobs if r.info.run_id in ids]
    runs = runs_table(jobs)
    histories = load_histories(client, jobs, runs)
    return SweepData(uri=uri, experiment_ids=experiment_ids, sweep_id=parent.info.run_id,
                     sweep_name=f"{parent.info.run_name} (best trial of each study)",
                     runs=runs, histories=histories,
                     load_seconds={"all": time.perf_counter() - start})


def fixed_rate_study(uri: str, experiment_ids: list[str],
                     name: str = FIXED_EXPERIMENT) -> tuple[str, pd.DataFrame] | None:
    """(parent run id, runs table) of the newest finished sweep of experiment ``name``."""
    from mlflow import MlflowClient

    from backprop_lab.analysis.loading import _search_all, runs_table, select_runs

    client = MlflowClient(tracking_uri=uri)
    parents = _search_all(client, experiment_ids,
                          f"tags.`{ROLE_TAG}` = 'sweep' and tags.`choice.experiment` = '{name}'"
                          " and attributes.status = 'FINISHED'",
                          order_by=["attributes.start_time DESC"])
    if not parents:
        return None
    _, _, _, jobs = select_runs(uri, None, parents[0].info.run_id)
    return parents[0].info.run_id, runs_table(jobs)


def comparison(tuned_runs: pd.DataFrame, fixed_runs: pd.DataFrame | None) -> pd.DataFrame:
    """Per activation x depth: the tuned run (its lr and final metrics) beside the fixed-rate
    runs (their lr and the mean of their seeds' final metrics)."""
    keys = ["activation", "depth"]
    cols = {"lr": "tuned lr", "val/loss": "tuned val loss", "val/accuracy": "tuned val acc"}
    table = tuned_runs[keys + list(cols)].rename(columns=cols)
    if fixed_runs is not None and not fixed_runs.empty:
        fixed = (fixed_runs[fixed_runs["outcome"] == "finished"]
                 .groupby(keys)
                 .agg(**{"fixed lr": ("lr", "first"), "fixed val loss": ("val/loss", "mean"),
                         "fixed val acc": ("val/accuracy", "mean"),
                         "fixed seeds": ("seed", "nunique")})
                 .reset_index())
        table = table.merge(fixed, on=keys, how="left")
    order = {a: i for i, a in enumerate(("sigmoid", "tanh", "relu"))}
    return (table.assign(_o=table["activation"].map(order).fillna(99))
            .sort_values(["_o", "depth"]).drop(columns="_o").reset_index(drop=True))


def comparison_figure(table: pd.DataFrame):
    """Validation loss against depth per activation, tuned (solid) and fixed-rate (dashed),
    and the tuned learning rate against depth."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_loss, ax_lr = fig.subplots(1, 2)
    colors = {"sigmoid": "#d62728", "tanh": "#1f77b4", "relu": "#2ca02c"}
    for activation, rows in table.groupby("activation", sort=False):
        color = colors.get(activation)
        ax_loss.plot(rows["depth"], rows["tuned val loss"], "o-", color=color,
                     label=f"{activation} tuned lr")
        if "fixed val loss" in rows:
            ax_loss.plot(rows["depth"], rows["fixed val loss"], "s--", color=color, alpha=0.6,
                         label=f"{activation} lr {rows['fixed lr'].iloc[0]:g}")
        ax_lr.plot(rows["depth"], rows["tuned lr"], "o-", color=color, label=activation)
    ax_loss.set(xlabel="hidden layers (depth)", ylabel="final validation loss",
                title="Validation loss: tuned vs fixed learning rate")
    ax_lr.set(xlabel="hidden layers (depth)", ylabel="best learning rate", yscale="log",
              title="Best learning rate per activation x depth")
    for ax in (ax_loss, ax_lr):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def comparison_markdown(table: pd.DataFrame, fixed_id: str | None) -> str:
    """The comparison as a markdown table, with where the fixed-rate numbers come from."""
    def fmt(value) -> str:
        if isinstance(value, float | np.floating):
            return "-" if np.isnan(value) else f"{value:.3g}"
        return str(value)

    head = list(table.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |"
              for row in table.itertuples(index=False)]
    source = (f"fixed-rate study: sweep run {fixed_id} (mean over its seeds)" if fixed_id
              else "no finished fixed-rate study (experiment=vanishing_gradients) in this store")
    return "\n".join(lines) + f"\n\n{source}\n"
