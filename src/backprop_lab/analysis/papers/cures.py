"""The cures for gradient flow at depth (experiment=cures): what orthogonal init at criticality,
residual connections (He et al. 2016), layer normalization (Ba et al. 2016), batch
normalization (Ioffe & Szegedy 2015) and gradient clipping (Pascanu et al. 2013) change in deep
networks that fail plain.

Per run: the gradient ratio ||dW_1|| / ||dW_L|| (layer 1 against the output layer) at
initialization and at the last epoch, and the final validation loss. Each cure is compared
with the plain network of the same activation by one rule that accounts for the spread over
seeds: a quantity is **higher** (or **lower**) with the cure only when every seed's value with the
cure is above (below) every plain seed's value, the two ranges not overlapping; otherwise the
data show **no clear change**. A run **trains** when its final validation loss is below half
the loss of chance (ln of the number of classes); a diverged run does not.
"""

from __future__ import annotations

import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..summary import markdown_table
from .common import Claim, PaperReport, fmt

CURES = ("plain", "orthogonal", "residual", "layer_norm", "batch_norm", "clip")
ACTIVATIONS = ("tanh", "relu", "sigmoid")
TRAINS = 0.5  # x the chance loss ln(k)
#: Line styles: plain drawn black and dashed, clipping dotted (the two coincide until an update
#: is clipped: same weights, same first gradient).
STYLES = {"plain": {"color": "black", "ls": "--", "lw": 2.0}, "clip": {"ls": ":", "lw": 2.4}}
LOSS_CAP = 10.0  # the validation-loss axis ends here (a diverging run reaches 1e89)


def _colors(cures: list[str]) -> dict[str, tuple]:
    others = [c for c in cures if c != "plain"]
    colors = dict(zip(others, sns.color_palette("colorblind", len(others))))
    return colors | {"plain": (0.0, 0.0, 0.0)}


def cure_of(run: pd.Series) -> str:
    """The run's cure: its ``cure=`` override, else what its network's repr shows."""
    found = re.search(r"(?:^|[,\s])\+?cure=(\w+)", str(run.get("overrides") or ""))
    if found:
        return found[1]
    net = str(run.get("net") or "")
    for word, cure in (("residual", "residual"), ("layer norm", "layer_norm"),
                       ("batch norm", "batch_norm"), ("orthogonal", "orthogonal")):
        if word in net:
            return cure
    return "plain"


def _order(values, reference) -> list[str]:
    present = [str(v) for v in pd.unique(values)]
    return ([v for v in reference if v in present]
            + sorted(v for v in present if v not in reference))


def run_table(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """One row per run: activation, cure, seed, outcome, gradient ratio layer 1 / layer L at
    initialization and at the last epoch, final validation loss and accuracy, chance loss."""
    grads = histories[histories["metric"] == "grad_norm"]
    scalars = histories[histories["metric"].isin(["val/loss", "val/accuracy", "train/loss",
                                                   "clip/fraction"])]
    rows = []
    for run in runs.itertuples(index=False):
        r = pd.Series(run._asdict())
        g = grads[grads["run_id"] == r["run_id"]]
        s = scalars[scalars["run_id"] == r["run_id"]]
        if g.empty or s.empty:
            continue
        last_layer = int(g["layer"].max())

        def ratio(epoch: int, g=g, last_layer=last_layer) -> float:
            at = g[g["epoch"] == epoch].set_index("layer")["value"]
            return float(at.get(1, np.nan) / at.get(last_layer, np.nan))

        last_epoch = int(g["epoch"].max())
        final = s[s["epoch"] == s["epoch"].max()]
        final = pd.Series(final["value"].to_numpy(), index=final["metric"].astype(str))
        if str(r.get("status")) == "RUNNING":  # a sweep still under way: its finished runs
            continue
        tag = r.get("outcome")
        outcome = tag if isinstance(tag, str) else str(r.get("status", "finished")).lower()
        classes = max(int(r.get("n_classes") or 2), 2) if "n_classes" in r else 2
        val_loss = float(final.get("val/loss", np.nan))
        rows.append({
            "run_id": r["run_id"], "activation": str(r["activation"]), "cure": cure_of(r),
            "seed": r["seed"], "outcome": outcome,
            "ratio at init": ratio(0), "ratio at end": ratio(last_epoch),
            "final val loss": val_loss if outcome == "finished" else np.inf,
            "final train loss": float(final.get("train/loss", np.nan)),
            "final val acc": float(final.get("val/accuracy", np.nan)),
            "epochs clipped": float(s[s["metric"] == "clip/fraction"]["value"].mean()),
            "trains": bool(outcome == "finished" and val_loss < TRAINS * math.log(classes)),
        })
    return pd.DataFrame(rows)


def _spread(values: pd.Series, digits: int = 3) -> str:
    v = values.astype(float)
    if v.empty:
        return "n/a"
    mid = float(np.exp(np.log(v[v > 0]).mean())) if (v > 0).all() and np.isfinite(v).all() \
        else float(v.median())
    return f"{fmt(mid, digits)} [{fmt(v.min(), digits)}, {fmt(v.max(), digits)}]"


def summary_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per activation and cure: runs, how many train / diverged, the gradient ratio at init
    and at the end (geometric mean [min, max] over seeds), final val loss and accuracy."""
    rows = []
    for (activation, cure), sub in per_run.groupby(["activation", "cure"]):
        rows.append({"activation": activation, "cure": cure, "runs": len(sub),
                     "train": int(sub["trains"].sum()),
                     "diverged": int((sub["outcome"] != "finished").sum()),
                     "‖dW1‖/‖dWL‖ at init": _spread(sub["ratio at init"]),
                     "‖dW1‖/‖dWL‖ at end": _spread(sub["ratio at end"]),
                     "final val loss": _spread(sub["final val loss"]),
                     "final val acc": _spread(sub["final val acc"], 2),
                     "epochs clipped": fmt(sub["epochs clipped"].mean(), 2)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    acts = _order(table["activation"], ACTIVATIONS)
    cures = _order(table["cure"], CURES)
    return table.sort_values(
        ["activation", "cure"],
        key=lambda s: s.map({v: i for i, v in enumerate(acts if s.name == "activation"
                                                         else cures)})).reset_index(drop=True)


def compare(cured: pd.Series, plain: pd.Series) -> str:
    """``higher`` / ``lower`` when the two sets of values do not overlap, else
    ``no clear change`` (NaN values: ``n/a``)."""
    a, b = cured.astype(float), plain.astype(float)
    if a.empty or b.empty or a.isna().any() or b.isna().any():
        return "n/a"
    if a.min() > b.max():
        return "higher"
    if a.max() < b.min():
        return "lower"
    return "no clear change"


QUANTITIES = (("ratio at init", "‖dW1‖/‖dWL‖ at init"), ("ratio at end", "‖dW1‖/‖dWL‖ at end"),
              ("final val loss", "final val loss"))


def changes_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per activation and cure (not plain): what the cure changes against plain, by the
    non-overlap rule, with the two ranges."""
    rows = []
    for activation in _order(per_run["activation"], ACTIVATIONS):
        act = per_run[per_run["activation"] == activation]
        plain = act[act["cure"] == "plain"]
        for cure in _order(act["cure"], CURES):
            if cure == "plain":
                continue
            sub = act[act["cure"] == cure]
            row = {"activation": activation, "cure": cure}
            for column, label in QUANTITIES:
                verdict = compare(sub[column], plain[column])
                row[label] = (f"{verdict}: {_spread(sub[column])} vs plain "
                              f"{_spread(plain[column])}")
            row["trains (cure / plain)"] = (f"{int(sub['trains'].sum())}/{len(sub)} vs "
                                            f"{int(plain['trains'].sum())}/{len(plain)}")
            rows.append(row)
    return pd.DataFrame(rows)


def claims(per_run: pd.DataFrame) -> list[Claim]:
    out = []
    if per_run.empty:
        return [Claim("plain networks at this depth fail", "no runs", None)]
    for activation in _order(per_run["activation"], ACTIVATIONS):
        act = per_run[per_run["activation"] == activation]
        plain = act[act["cure"] == "plain"]
        if plain.empty:
            out.append(Claim(f"{activation}: the plain network fails", "no plain runs", None))
            continue
        out.append(Claim(
            f"{activation}: the plain network fails (rule: no seed trains)",
            f"{int(plain['trains'].sum())}/{len(plain)} train; final val loss "
            f"{_spread(plain['final val loss'])}", not bool(plain["trains"].any())))
        for cure in _order(act["cure"], CURES):
            if cure == "plain":
                continue
            sub = act[act["cure"] == cure]
            verdict = compare(sub["final val loss"], plain["final val loss"])
            out.append(Claim(
                f"{activation} + {cure}: cures it (rule: every seed trains and its final val "
                f"loss is below every plain seed's)",
                f"{int(sub['trains'].sum())}/{len(sub)} train; final val loss "
                f"{_spread(sub['final val loss'])} vs plain {_spread(plain['final val loss'])} "
                f"({verdict})",
                bool(sub["trains"].all() and verdict == "lower")))
    return out


THEORY_TOLERANCE = 0.05


def residual_theory_table(runs: pd.DataFrame, histories: pd.DataFrame,
                          per_run: pd.DataFrame) -> pd.DataFrame:
    """Residual runs at initialization: the per-layer factor std(δ^l) / std(δ^(l+1)) over the
    steps between residual layers (geometric mean over the steps and the seeds) against the
    residual mean field (engine/residual_theory.py) and the plain network's mean field."""
    from backprop_lab.engine.residual_theory import residual_mean_field
    from backprop_lab.engine.theory import mean_field

    residual = per_run[per_run["cure"] == "residual"]
    delta = histories[(histories["metric"] == "delta_std") & (histories["epoch"] == 0)]
    info = runs.set_index("run_id")
    rows = []
    for activation, sub in residual.groupby("activation"):
        measured, predicted, plain = [], [], []
        for run_id in sub["run_id"]:
            run = info.loc[run_id]
            scale = re.search(r"residual x([0-9.eE+-]+)", str(run.get("net") or ""))
            if scale is None or not run.get("sizes") or "?" in str(run["sizes"]):
                continue
            sizes = [int(v) for v in str(run["sizes"]).split("-")]
            q0 = float(run["input_var"]) if pd.notna(run.get("input_var")) else 1.0
            d = delta[delta["run_id"] == run_id].set_index("layer")["value"].sort_index()
            L = len(sizes) - 1
            steps = np.arange(2, L - 1)  # 1-based l: layers l and l + 1 both residual
            ratios = d.reindex(steps).to_numpy(float) / d.reindex(steps + 1).to_numpy(float)
            theory = residual_mean_field(activation, str(run["init"]), sizes, float(scale[1]),
                                         input_var=q0)
            plain_theory = mean_field(activation, str(run["init"]), sizes, input_var=q0)
            measured.append(np.log(ratios))
            predicted.append(np.log(theory.std_factors[steps - 1]))
            plain.append(np.log(plain_theory.std_factors[steps - 1]))
        if not measured:
            continue
        m, p, q = (float(np.exp(np.mean(np.concatenate(v)))) for v in (measured, predicted,
                                                                          plain))
        rows.append({"activation": activation, "runs": len(measured), "measured": m,
                     "residual mean field": p, "plain mean field": q,
                     "measured / residual theory": m / p})
    return pd.DataFrame(rows)


def theory_claims(table: pd.DataFrame) -> list[Claim]:
    return [Claim(
        f"{r['activation']} residual networks at initialization: std(δ) changes a layer by the "
        f"residual mean field's factor (Yang & Schoenholz 2017; rule: within "
        f"{THEORY_TOLERANCE:.0%})",
        f"measured {r['measured']:.4f}, residual mean field {r['residual mean field']:.4f} "
        f"(plain mean field {r['plain mean field']:.4f}); ratio "
        f"{r['measured / residual theory']:.3f} over {r['runs']} runs",
        bool(abs(r["measured / residual theory"] - 1) < THEORY_TOLERANCE))
        for r in table.to_dict("records")]


def _profile(histories: pd.DataFrame, per_run: pd.DataFrame, metric: str) -> pd.DataFrame:
    """grad_norm per layer at initialization and at the last epoch, with each run's cure."""
    data = histories[histories["metric"] == metric]
    last = data.groupby("run_id", observed=True)["epoch"].transform("max")
    data = data[(data["epoch"] == 0) | (data["epoch"] == last)].copy()
    data["when"] = np.where(data["epoch"] == 0, "at initialization", "at the end")
    cures = per_run.set_index("run_id")["cure"]
    data["cure"] = data["run_id"].astype(str).map(cures)
    data["activation"] = data["activation"].astype(str)
    return data[(data["value"] > 0) & np.isfinite(data["value"]) & data["cure"].notna()]


def plot_profiles(histories: pd.DataFrame, per_run: pd.DataFrame,
                  metric: str = "grad_norm") -> Figure:
    """The vanishing profile per cure: ``metric`` per layer (log scale), one row per activation,
    at initialization (left) and at the end (right); geometric mean over seeds, band min-max."""
    data = _profile(histories, per_run, metric)
    if data.empty:
        raise ValueError(f"no {metric} in the data")
    acts = _order(data["activation"], ACTIVATIONS)
    cures = _order(data["cure"], CURES)
    colors = _colors(cures)
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(acts), 2, figsize=(12, 3.6 * len(acts)), sharex=True,
                                 squeeze=False, layout="constrained")
        for row, activation in enumerate(acts):
            for col, when in enumerate(("at initialization", "at the end")):
                ax = axes[row, col]
                ax.set_yscale("log")
                sub = data[(data["activation"] == activation) & (data["when"] == when)]
                for cure in cures:
                    c = sub[sub["cure"] == cure]
                    if c.empty:
                        continue
                    logs = np.log10(c["value"].astype(float))
                    g = logs.groupby(c["layer"]).agg(["mean", "min", "max"])
                    style = {"ls": "-", "lw": 1.6, "color": colors[cure]} | STYLES.get(cure, {})
                    ax.plot(g.index, 10 ** g["mean"], label=cure, **style)
                    ax.fill_between(g.index, 10 ** g["min"], 10 ** g["max"],
                                    color=colors[cure], alpha=0.15, lw=0)
                ax.set_title(f"{activation}: {metric} per layer {when}")
                ax.set_xlabel("layer l (1 = input side)")
                ax.set_ylabel(f"{metric} (log)")
                if row == 0 and col == 1:
                    ax.legend(fontsize="small", ncols=2)
    fig.suptitle("Vanishing profile per cure (geometric mean over seeds, band = min-max; clip "
                 "is plain until an update is clipped)")
    return fig


def plot_val_loss(histories: pd.DataFrame, per_run: pd.DataFrame) -> Figure:
    """Validation loss against epoch, one panel per activation, one colour per cure (mean over
    seeds, band min-max; log scale)."""
    data = histories[histories["metric"] == "val/loss"].copy()
    if data.empty:
        raise ValueError("no val/loss in the data")
    data["cure"] = data["run_id"].astype(str).map(per_run.set_index("run_id")["cure"])
    data["activation"] = data["activation"].astype(str)
    data = data[np.isfinite(data["value"]) & data["cure"].notna()]
    acts = _order(data["activation"], ACTIVATIONS)
    cures = _order(data["cure"], CURES)
    colors = _colors(cures)
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(acts), figsize=(5.2 * len(acts), 4.2), sharey=True,
                                 squeeze=False, layout="constrained")
        for col, activation in enumerate(acts):
            ax = axes[0, col]
            ax.set_yscale("log")
            sub = data[data["activation"] == activation]
            for cure in cures:
                c = sub[sub["cure"] == cure].groupby("epoch")["value"]
                if not len(c):
                    continue
                style = {"ls": "-", "lw": 1.4, "color": colors[cure]} | STYLES.get(cure, {})
                median = c.median()
                ax.plot(median.index, median.to_numpy(), label=cure, **style)
                ax.fill_between(median.index, c.min().to_numpy(), c.max().to_numpy(),
                                color=colors[cure], alpha=0.12, lw=0)
            ax.set_ylim(top=LOSS_CAP)
            ax.set_title(f"{activation}: validation loss")
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation loss (log)")
            if col == len(acts) - 1:
                ax.legend(fontsize="small")
    fig.suptitle(f"Validation loss per cure (median over seeds, band = min-max; axis cut at "
                 f"{LOSS_CAP:g})")
    return fig


def report(sweep) -> PaperReport:
    runs, histories = sweep.runs, sweep.histories
    per_run = run_table(runs, histories)
    depth = runs["depth"].dropna()
    width = runs["width"].dropna()
    shape = (f"{int(depth.iloc[0])} hidden layers of {int(width.iloc[0])} units"
             if len(depth) and len(width) else "deep networks")
    table = summary_table(per_run)
    changes = changes_table(per_run) if not per_run.empty else per_run
    theory = (residual_theory_table(runs, histories, per_run) if not per_run.empty
              else pd.DataFrame())
    return PaperReport(
        title="The cures for gradient flow at depth: orthogonal init at criticality, residual "
              "connections, layer and batch normalization, gradient clipping",
        setup=(f"{shape}, each activation plain and with one cure, over seeds (see the runs' "
               "params for data and optimizer). ‖dW1‖/‖dWL‖ is the gradient norm of layer 1 "
               "over that of the output layer. Rules: a cure makes a quantity **higher** "
               "(**lower**) than plain only when every seed's value with the cure is above "
               "(below) every plain seed's; otherwise **no clear change**. A run **trains** when "
               f"its final validation loss is below {TRAINS:g} x ln(classes) (chance: ln 2 = "
               "0.693 for two classes); a diverged run does not, and counts as an infinite "
               "loss. Values are geometric means over seeds [min, max] (the median where a run "
               "diverged); `epochs clipped` is the mean fraction of updates clipping changed."),
        claims=claims(per_run) + theory_claims(theory),
        tables={
            "What each cure changes, against plain": markdown_table(changes)
            if not changes.empty else "no data",
            "Per activation and cure, over seeds": markdown_table(table)
            if not table.empty else "no data",
            "Residual networks at initialization: per-layer factor of std(δ) against theory":
                markdown_table(theory) if not theory.empty else "no data",
        },
        figures={
            "profiles_grad_norm": lambda: plot_profiles(histories, per_run, "grad_norm"),
            "profiles_delta_std": lambda: plot_profiles(histories, per_run, "delta_std"),
            "val_loss": lambda: plot_val_loss(histories, per_run),
        },
    )
