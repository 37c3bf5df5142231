"""The gradient-flow page's records (analysis/flow_records.py) and the analysis tables
(analysis/loading.py's runs and histories), both ways: records from a loaded sweep (the command
and the report), and from records the tables the computed conclusion reads
(analysis/summary.py), so that the page says what the report says."""

from __future__ import annotations

import math
from collections.abc import Sequence

from backprop_lab.analysis.flow_records import LAYER_METRICS, make_record


def _sizes_text(sizes) -> str | None:
    return "-".join(str(int(s)) for s in sizes) if sizes else None


def record_tables(records: Sequence[dict]):
    """The runs and histories tables (analysis/loading.py's layout) of the records, with the
    histories at initialization and at the last epoch only: what the conclusions read."""
    import numpy as np
    import pandas as pd

    from backprop_lab.analysis.chance import at_chance
    from backprop_lab.analysis.columns import ID_COLUMNS
    from backprop_lab.analysis.flow_records import make_label

    runs, parts = [], []
    for r in records:
        row = {"run_id": r["id"], "run_name": r["name"],
               "label": make_label(r.get("activation"), r.get("init")),
               "activation": r.get("activation"), "init": r.get("init"),
               "depth": r.get("depth"), "n_layers": r.get("n_layers"), "width": r.get("width"),
               "sizes": _sizes_text(r.get("sizes")), "seed": r.get("seed"),
               "dataset": r.get("dataset"), "optimizer": r.get("optimizer"), "lr": r.get("lr"),
               "input_var": r.get("input_var"), "epochs": r.get("epochs_config"),
               "status": r.get("status"), "outcome": r.get("outcome")}
        row |= {k: (np.nan if v is None else v) for k, v in (r.get("final") or {}).items()}
        row["at_chance"] = at_chance({**row, "chance_accuracy": r.get("chance_accuracy"),
                                      "chance_tolerance": r.get("chance_tolerance")})
        runs.append(row)
        for when, epoch in zip((0, 1), r["end_epochs"]):
            for metric, rows in r["ends"].items():
                for layer, value in enumerate(rows[when], start=1):
                    parts.append((r["id"], epoch, layer, metric,
                                  np.nan if value is None else value))
    runs = pd.DataFrame(runs)
    for column in ("train/loss", "train/accuracy", "val/loss", "val/accuracy"):
        if column not in runs:
            runs[column] = np.nan
    for column in ("depth", "n_layers", "width", "seed"):
        runs[column] = runs[column].astype("Int64")
    long = pd.DataFrame(parts, columns=["run_id", "epoch", "layer", "metric", "value"])
    ids = runs[[c for c in ID_COLUMNS if c in runs.columns]]
    histories = ids.merge(long, on="run_id", how="right")
    return runs, histories


def conclusions_of(records: Sequence[dict]) -> list[str]:
    """:func:`backprop_lab.analysis.summary.conclusions` of the records; a line saying why
    when they cannot be computed (the page is still drawn)."""
    from backprop_lab.analysis.summary import conclusions

    try:
        return conclusions(*record_tables(records))
    except Exception as exc:  # noqa: BLE001 - a missing column must not cost the page
        return [f"(No computed conclusion: {type(exc).__name__}: {exc}.)"]


def records_from_tables(runs, histories, histograms=None) -> list[dict]:
    """Records of the runs of a :class:`.loading.SweepData` (its ``runs`` and ``histories``)
    and of its histograms table (:func:`.histograms.load_histograms`, or None)."""

    by_run = {run_id: frame for run_id, frame in
              histories[histories["layer"].notna()].groupby("run_id", observed=True)}
    hists = ({run_id: frame for run_id, frame in histograms.groupby("run_id")}
             if histograms is not None and not histograms.empty else {})
    out = []
    for run in runs.to_dict("records"):
        frame = by_run.get(run["run_id"])
        if frame is None:
            continue
        wide = frame.pivot_table(index="epoch", columns=["metric", "layer"], values="value",
                                 observed=True, dropna=False)
        epochs = wide.index.to_numpy()
        layers = {}
        for metric in LAYER_METRICS:
            if metric in wide.columns.get_level_values(0):
                block = wide[metric]
                block = block.reindex(columns=sorted(block.columns))
                layers[metric] = block.to_numpy(dtype=float)
        if not layers:
            continue
        rows = hists.get(run["run_id"])
        meta = _meta_from_row(run)
        out.append(make_record(meta, epochs, layers,
                               () if rows is None else list(rows.itertuples(index=False))))
    return out


def _plain(value):
    """A pandas/numpy cell as JSON: None for missing, int/float/str otherwise."""
    import numpy as np
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if math.isfinite(value) else None
    return value


def _meta_from_row(row: dict) -> dict:
    sizes = row.get("sizes")
    widths = ([int(s) for s in str(sizes).split("-")] if sizes and "?" not in str(sizes)
              else None)
    meta = {"id": row["run_id"], "name": row.get("run_name") or row["run_id"][:8],
            "sizes": widths, "status": row.get("status"), "epochs_config": row.get("epochs"),
            "final": {k: _plain(row.get(k)) for k in
                      ("train/loss", "train/accuracy", "val/loss", "val/accuracy")}}
    for key in ("label", "activation", "init", "depth", "n_layers", "width", "seed", "dataset",
                "optimizer", "lr", "input_var", "outcome", "chance_accuracy", "chance_tolerance"):
        meta[key] = _plain(row.get(key))
    return meta
