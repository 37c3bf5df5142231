"""Measured gradient flow at initialization beside mean-field theory (engine/theory.py), from the
loaded tables: per-layer factors of std(delta) and pre-activation variances.

Each run's prediction uses its own layer widths (``sizes``) and its data's input variance
(``input_var``, the ``data.input_var`` param; 1 when missing, as for standardized data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from backprop_lab.engine.initializers import SCALED_INITIALIZERS
from backprop_lab.engine.theory import MeanField, anchored, depth_scale, mean_field, sigma_w2

from .summary import geometric_mean, sort_by_label


def _finite(value, default: float) -> float:
    return default if value is None or not np.isfinite(float(value)) else float(value)


def run_theory(activation: str, init: str, sizes: str, input_var: float | None,
               variances: tuple[float, float] | None = None) -> MeanField:
    """Mean-field predictions for a run described by the runs table's columns; ``variances``
    its (sigma_w2, sigma_b2) (sigma_w2 used by gaussian / orthogonal only)."""
    widths = [int(w) for w in str(sizes).split("-")]
    q0 = _finite(input_var, 1.0)
    s2, b2 = variances if variances is not None else (None, 0.0)
    s2 = _finite(s2, 1.0) if init in SCALED_INITIALIZERS else None
    return mean_field(activation, init, widths, input_var=q0, sigma_b2=_finite(b2, 0.0),
                      sigma_w2=s2)


def _input_vars(runs: pd.DataFrame | None) -> dict[str, float]:
    if runs is None or "input_var" not in runs.columns:
        return {}
    return dict(zip(runs["run_id"], runs["input_var"].astype(float)))


def _variances(runs: pd.DataFrame | None) -> dict[str, tuple[float, float]]:
    """run_id -> (sigma_w2, sigma_b2) for the runs that logged them."""
    if runs is None or "sigma_w2" not in runs.columns or "sigma_b2" not in runs.columns:
        return {}
    return dict(zip(runs["run_id"], zip(runs["sigma_w2"].astype(float),
                                        runs["sigma_b2"].astype(float))))


def factor_table(histories: pd.DataFrame, runs: pd.DataFrame | None = None,
                 by: tuple[str, ...] = ("dataset", "label")) -> pd.DataFrame:
    """Per configuration: the measured per-layer factor of std(delta) at initialization
    (geometric mean of delta_std(l) / delta_std(l+1) over the hidden steps l = 1..L-2 and over
    runs), the mean-field prediction of the same steps and the linear-regime one.

    Columns: ``by``..., activation, init, runs, measured, mean_field, linear, ratio
    (= measured / mean_field).
    """
    q0, variances = _input_vars(runs), _variances(runs)
    init = histories[(histories["metric"] == "delta_std") & (histories["epoch"] == 0)]
    rows = []
    for run_id, run in init.groupby("run_id", observed=True):
        first = run.iloc[0]
        n_layers = int(first["n_layers"])
        values = run.set_index("layer")["value"].astype(float)
        steps = [values.get(l) / values.get(l + 1) for l in range(1, n_layers - 1)
                 if l in values.index and l + 1 in values.index]
        if not steps:
            continue
        theory = run_theory(first["activation"], first["init"], first["sizes"],
                            q0.get(run_id), variances.get(run_id))
        rows.append({**{k: first[k] for k in by}, "activation": first["activation"],
                     "init": first["init"], "measured": geometric_mean(steps),
                     "mean_field": geometric_mean(theory.std_factors[: n_layers - 2]),
                     "linear": geometric_mean(theory.linear_factors[: n_layers - 2])})
    columns = [*by, "activation", "init", "runs", "measured", "mean_field", "linear", "ratio"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows).astype({k: object for k in (*by, "activation", "init")})
    table = frame.groupby([*by, "activation", "init"], as_index=False).agg(
        runs=("measured", "size"), measured=("measured", geometric_mean),
        mean_field=("mean_field", geometric_mean), linear=("linear", geometric_mean))
    table["ratio"] = table["measured"] / table["mean_field"]
    if "label" in by:
        table = sort_by_label(table, *[k for k in by if k != "label"])
    return table[columns]


def profile_table(histories: pd.DataFrame, runs: pd.DataFrame | None = None,
                  metric: str = "delta_std") -> pd.DataFrame:
    """Per run and layer at initialization: the measured ``metric`` (``delta_std`` or
    ``preact_var``) and its predictions. For delta_std the predictions are anchored at the
    measured top hidden layer (L-1) and multiplied by the per-layer factors going down
    (``mean_field``, ``linear``); for preact_var ``mean_field`` is q^l itself.

    Columns: run_id, the identifying columns, layer, measured, mean_field, linear.
    """
    q0, variances = _input_vars(runs), _variances(runs)
    init = histories[(histories["metric"] == metric) & (histories["epoch"] == 0)]
    parts = []
    for run_id, run in init.groupby("run_id", observed=True):
        first = run.iloc[0]
        n_layers = int(first["n_layers"])
        theory = run_theory(first["activation"], first["init"], first["sizes"], q0.get(run_id),
                            variances.get(run_id))
        run = run.dropna(subset=["layer"]).sort_values("layer")
        layers = run["layer"].astype(int).to_numpy()
        measured = run["value"].astype(float).to_numpy()
        if metric == "preact_var":
            mf, linear = theory.q[layers - 1], np.full(layers.size, np.nan)
        else:
            top = n_layers - 1
            at_top = run.loc[run["layer"] == top, "value"]
            anchor = float(at_top.iloc[0]) if len(at_top) else np.nan

            mf = anchored(anchor, theory.std_factors[: top - 1], layers)
            linear = anchored(anchor, theory.linear_factors[: top - 1], layers)
        frame = run[["run_id", "label", "activation", "init", "depth", "seed"]
                    + [c for c in ("dataset",) if c in run.columns]].copy()
        frame["layer"] = layers
        frame["measured"], frame["mean_field"], frame["linear"] = measured, mf, linear
        parts.append(frame)
    if not parts:
        return pd.DataFrame(columns=["run_id", "label", "layer", "measured", "mean_field",
                                     "linear"])
    out = pd.concat(parts, ignore_index=True)
    for column in ("label", "activation", "init", "dataset"):
        if column in out.columns:
            out[column] = out[column].astype(object)
    return out


def depth_scale_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (activation, init, width) of the runs: sigma_w^2 = width Var(W), the fixed point q*
    of the variance map reached from the data's input variance, chi_1 at it, the gradient's
    depth scale xi_grad = -1/ln(chi_1) (its variance changes by e every |xi_grad| layers; inf:
    critical) and the correlation depth scale xi_c (Schoenholz et al. 2017; = xi_grad in the
    ordered phase only)."""
    rows = []
    runs = runs.copy()
    for column, default in (("sigma_w2", np.nan), ("sigma_b2", 0.0)):
        if column not in runs.columns:
            runs[column] = default
    keys = runs[["activation", "init", "width", "input_var", "sigma_w2", "sigma_b2"]
                ].drop_duplicates(["activation", "init", "width", "sigma_w2", "sigma_b2"])
    for r in keys.itertuples():
        q0 = _finite(r.input_var, 1.0)
        width = int(r.width)
        s2 = _finite(r.sigma_w2, 1.0) if r.init in SCALED_INITIALIZERS else None
        scale = depth_scale(r.activation, r.init, width=width, q0=q0,
                            sigma_b2=_finite(r.sigma_b2, 0.0), sigma_w2=s2)
        rows.append({"activation": r.activation, "init": r.init, "width": width,
                     "sigma_w^2": sigma_w2(r.init, width, width, r.activation, s2),
                     "sigma_b^2": scale.sigma_b2, "q*": scale.q_star, "chi_1": scale.chi_1,
                     "xi_grad": scale.xi_grad, "xi_c": scale.xi_c})
    return pd.DataFrame(rows)


def variance_table(histories: pd.DataFrame, runs: pd.DataFrame | None = None,
                   by: tuple[str, ...] = ("dataset", "label")) -> pd.DataFrame:
    """preact_var/layer_l at initialization (geometric mean over runs) against q^l of the
    variance map, one row per configuration and layer. Columns: ``by``..., layer, measured,
    q (mean field), ratio."""
    prof = profile_table(histories, runs, "preact_var")
    if prof.empty:
        return pd.DataFrame(columns=[*by, "layer", "measured", "q", "ratio"])
    table = prof.groupby([*by, "layer"], as_index=False).agg(
        measured=("measured", geometric_mean), q=("mean_field", geometric_mean))
    table["ratio"] = table["measured"] / table["q"]
    return table
