"""Seaborn figures answering the questions of a vanishing-gradient study.

Every function takes the tables of :mod:`.loading` (``histories``, long; ``runs``, one row per
run) and returns a matplotlib ``Figure``; none of them changes global styles. Where a figure
compares layers, it uses runs of one depth (the deepest by default), since layer indices of
networks of different depths are not comparable. Seeds are aggregated by seaborn in the axis
scale: on a log axis its mean is the geometric mean (log scales are set before plotting for
that reason); bands give the min-max range over seeds unless stated.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from backprop_lab.engine.run_summary import Chance

from .summary import (
    RELU_LIKE,
    final_accuracy,
    geometric_mean,
    gradient_ratios,
    label_order,
    theory_factors,
)

HUE_TITLE = "activation (init)"
SEED_RANGE = ("pi", 100)  # band = min..max over seeds
METRIC_LABELS = {
    "delta_std": "std of back-propagated error δ",
    "grad_norm": "gradient norm ‖∂loss/∂W‖",
    "grad_weight_ratio": "‖∂loss/∂W‖ / ‖W‖",
}


def _styled(plot):
    """Draw inside seaborn's whitegrid style without touching the caller's rcParams."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
            return plot(*args, **kwargs)

    return wrapper


def palette(frame: pd.DataFrame) -> dict[str, tuple]:
    """One fixed colour per configuration label, in legend order, shared by all figures."""
    labels = label_order(frame)
    return dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))


class MissingData(ValueError):
    """The tables lack what a figure needs (e.g. runs trained with diagnostics off)."""


def _require(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    if frame.empty:
        raise MissingData(f"no {what} in the data")
    return frame


def _one_depth(frame: pd.DataFrame, depth: int | None) -> tuple[pd.DataFrame, int]:
    depths = frame["depth"].dropna().unique()
    if len(depths) == 0:
        raise MissingData("no runs with these metrics and a known depth to plot")
    chosen = int(max(depths)) if depth is None else int(depth)
    if chosen not in set(int(d) for d in depths):
        raise ValueError(f"depth={depth} not in the data; depths: {sorted(map(int, depths))}")
    return frame[frame["depth"] == chosen], chosen


def seed_mean(frame: pd.DataFrame, by: list[str], log: bool = False) -> pd.DataFrame:
    """Mean of ``value`` over the runs in each ``by`` group, with ``low``/``high`` = mean ± 2
    standard errors (equal to the mean for a single run); with ``log``, computed on log10 of
    the values, i.e. a geometric mean and a multiplicative band."""
    values = np.log10(frame["value"].astype(float)) if log else frame["value"].astype(float)
    stats = frame.assign(_v=values).groupby(by, observed=True, sort=True)["_v"].agg(
        ["mean", "std", "count"]).reset_index()
    half = (2 * stats["std"] / np.sqrt(stats["count"])).fillna(0.0)
    low, mean, high = stats["mean"] - half, stats["mean"], stats["mean"] + half
    if log:
        low, mean, high = 10**low, 10**mean, 10**high
    return stats[by].assign(value=mean, low=low, high=high, runs=stats["count"])


def _positive(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows a log axis can show (a dead layer's zero gradient cannot be drawn on it)."""
    return frame[np.isfinite(frame["value"]) & (frame["value"] > 0)]


def _factor_text(steps: np.ndarray) -> str:
    low, high = float(steps.min()), float(steps.max())
    return f"{low:.3g}" if np.isclose(low, high) else f"{low:.3g} to {high:.3g}"


def chance_of_runs(frame: pd.DataFrame, runs: pd.DataFrame | None = None) -> Chance | None:
    """The chance accuracy of the runs in ``frame`` (any table with ``run_id``): from the
    ``runs`` table when given (each run's majority-class share, engine/run_summary.py), else
    1/k from the output width in ``sizes`` (k = 2 for one output). Several levels (data
    sets, or the validation splits of different seeds): the highest, so that no accuracy at
    chance for one run is drawn above the band. None when unknown."""
    chances = []
    if runs is not None and "run_id" in frame.columns:
        from .loading import run_chance

        wanted = set(frame["run_id"].astype(str))
        for row in runs[runs["run_id"].astype(str).isin(wanted)].to_dict("records"):
            chance = run_chance(row)
            if chance is not None:
                chances.append(chance)
    if not chances and "sizes" in frame.columns:
        for sizes in frame["sizes"].dropna().astype(str).unique():
            out = sizes.rsplit("-", 1)[-1]
            if out.isdigit():
                chances.append(Chance.uniform(max(2, int(out))))
    if not chances:
        return None
    return max(chances, key=lambda c: (c.accuracy, c.tolerance))


def draw_chance(ax, chance: Chance | None) -> None:
    """A dashed line at chance accuracy and a light band up to the highest accuracy still at
    chance (engine/run_summary.py)."""
    if chance is None:
        return
    ax.axhline(chance.accuracy, color="black", ls="--", lw=1, zorder=1)
    ax.axhspan(chance.accuracy, chance.threshold, color="grey", alpha=0.15, lw=0, zorder=0)
    ax.annotate(f"chance {chance.accuracy:.2f} (band: at chance)", (1.0, chance.accuracy),
                xycoords=("axes fraction", "data"), xytext=(-4, -3),
                textcoords="offset points", ha="right", va="top", fontsize="x-small")


@_styled
def plot_vanishing_profile(histories: pd.DataFrame, depth: int | None = None,
                           metrics: tuple[str, ...] = ("delta_std", "grad_norm")) -> Figure:
    """``metrics`` against layer index at initialization and after training, one line per
    configuration (geometric mean over seeds, band = min-max), log scale. At initialization the
    dashed line is the linear-regime theory: the measured value of the top hidden layer
    multiplied by the per-layer factor of mean-field theory once per layer further down; the
    dotted line the same with the linear-regime factor."""
    data, depth = _one_depth(histories[histories["metric"].isin(metrics)], depth)
    data = _positive(data.dropna(subset=["layer"]))
    from .summary import at_epochs

    data = at_epochs(data)
    data["layer"] = data["layer"].astype(int)
    colors = palette(data)
    n_layers = int(data["n_layers"].max())
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), sharex=True,
                             sharey="row", squeeze=False, layout="constrained")
    factors = {}
    for row, metric in enumerate(metrics):
        for col, when in enumerate(("init", "final")):
            ax = axes[row, col]
            sub = data[(data["metric"] == metric) & (data["when"] == when)]
            ax.set_yscale("log")  # before plotting: seaborn then averages log values
            sns.lineplot(sub, x="layer", y="value", hue="label", hue_order=list(colors),
                         palette=colors, estimator="mean", errorbar=SEED_RANGE,
                         marker="o", ax=ax, legend=False)
            if when == "init":
                for label, run in sub.groupby("label", observed=True):
                    first = run.iloc[0]
                    # factors[l-1]: predicted value(l) / value(l+1), l = 1..L-2
                    q0 = first["input_var"] if "input_var" in run.columns else None
                    top_layer = n_layers - 1
                    anchor = geometric_mean(run.loc[run["layer"] == top_layer, "value"])
                    for kind, style in (("mean_field", "--"), ("linear", ":")):
                        steps = theory_factors(first["activation"], first["init"],
                                               first["sizes"], q0, kind=kind)
                        if kind == "mean_field":
                            factors[label] = steps
                        if not (np.all(np.isfinite(steps)) and np.isfinite(anchor)):
                            continue
                        # from the top hidden layer down: anchor, anchor*f_{L-2}, ...
                        predicted = anchor * np.cumprod(np.r_[1.0, steps[::-1]])[::-1]
                        ax.plot(np.arange(1, top_layer + 1), predicted, ls=style, lw=1.3,
                                color=colors[label], alpha=0.9)
            epoch = int(sub["epoch"].max()) if when == "final" and not sub.empty else 0
            ax.set_title("at initialization (epoch 0)" if when == "init"
                         else f"after training (epoch {epoch})")
            ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)}\n(log scale)" if col == 0
                          else "")
            ax.set_xlabel("")
            ax.set_xticks(range(1, n_layers + 1, max(1, n_layers // 10)))
    handles = [Line2D([], [], color=c, marker="o", label=label) for label, c in colors.items()]
    handles += [Line2D([], [], color=colors[label], ls="--",
                       label=f"mean field {label}: ×{_factor_text(steps)} per layer")
                for label in colors
                if (steps := factors.get(label)) is not None and steps.size
                and np.isfinite(steps).all()]
    fig.supxlabel(f"layer l (1 = first layer, next to the input; {n_layers} = output layer)",
                  fontsize="medium")
    fig.legend(handles=handles, loc="outside right center", title="measured (solid)\n"
               "mean-field theory, init only (dashed)\nlinear regime (dotted)", fontsize="small",
               title_fontsize="small")
    fig.suptitle(f"Vanishing profile: the gradient signal from the output layer down to layer 1"
                 f"\n(depth {depth}: {n_layers} weight layers; geometric mean over seeds, "
                 f"band = min-max)")
    return fig


@_styled
def plot_grad_weight_ratio(histories: pd.DataFrame, depth: int | None = None) -> Figure:
    """Per-layer ``grad_weight_ratio`` against epoch, one panel per configuration, one line per
    layer (geometric mean over seeds), log scale."""
    data, depth = _one_depth(histories[histories["metric"] == "grad_weight_ratio"], depth)
    data = _positive(data.dropna(subset=["layer"]))
    order = label_order(data)
    # Aggregated with pandas first: seaborn's per-group estimator is far slower on thousands of
    # (layer, epoch) groups.
    means = seed_mean(data, ["label", "layer", "epoch"], log=True)
    means["label"] = means["label"].astype(object)
    means["layer"] = means["layer"].astype(int)
    grid = sns.relplot(means, x="epoch", y="value", hue="layer", col="label", col_order=order,
                       kind="line", palette="viridis", estimator=None, height=3.4, aspect=1.1,
                       facet_kws={"sharey": True, "subplot_kws": {"yscale": "log"}})
    grid.set_titles(col_template="{col_name}")
    grid.set_axis_labels("epoch", "‖∂loss/∂W‖ / ‖W‖ (log scale)")
    if grid.legend is not None:
        grid.legend.set_title("layer l")
    grid.figure.suptitle(f"Gradient-to-weight norm ratio per layer during training "
                         f"(depth {depth}, geometric mean over seeds)\none line per layer: "
                         f"l = 1 next to the input (dark) to l = {depth + 1}, the output (yellow)",
                         y=1.08)
    return grid.figure


def _at_chance_ids(runs: pd.DataFrame | None) -> set[str]:
    if runs is None or "at_chance" not in runs.columns:
        return set()
    return set(runs.loc[runs["at_chance"].eq(True), "run_id"].astype(str))


@_styled
def plot_gradient_ratio_vs_depth(histories: pd.DataFrame,
                                 runs: pd.DataFrame | None = None) -> Figure:
    """First-to-last-layer gradient ratio ``grad_norm(1) / grad_norm(L)`` per configuration,
    at initialization and after training (geometric mean over seeds; bars = min-max when
    there are several seeds); a ratio of 1 (dotted) means no vanishing. Against depth when the
    runs have several depths; with one depth, one column per configuration with every run as
    a dot (open: at initialization, filled: after training). Runs that ended at chance
    accuracy (``runs``' ``at_chance``) are marked with a cross after training."""
    ratios = gradient_ratios(histories)
    ratios = _require(ratios[np.isfinite(ratios["ratio"]) & (ratios["ratio"] > 0)],
                      "per-layer gradient norms")
    colors = palette(ratios)
    stuck = _at_chance_ids(runs)
    seeds = int(ratios.groupby(["label", "depth", "when"], observed=True)["run_id"]
                .nunique().max())
    depths = sorted(ratios["depth"].dropna().unique().astype(int))
    chance_note = ("; × = ended at chance accuracy, its ratio is no recovery"
                   if stuck & set(ratios["run_id"].astype(str)) else "")
    if len(depths) == 1:
        return _gradient_ratio_one_depth(ratios, colors, stuck, depths[0], chance_note)
    # Configurations side by side around each depth, so that none hides another.
    step = 0.04 * (max(depths) - min(depths)) / max(len(colors) - 1, 1)
    offset = {label: (i - (len(colors) - 1) / 2) * step for i, label in enumerate(colors)}
    ratios = ratios.assign(x=ratios["depth"].astype(float)
                           + ratios["label"].astype(object).map(offset).astype(float))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
    for ax, when in zip(axes, ("init", "final"), strict=True):
        sub = ratios[ratios["when"] == when]
        ax.set_yscale("log")  # before plotting: seaborn then averages log values
        sns.lineplot(sub, x="x", y="ratio", hue="label", hue_order=list(colors),
                     palette=colors, estimator="mean", errorbar=SEED_RANGE, marker="o",
                     err_style="bars", ax=ax, legend=when == "final")
        if when == "final":
            marked = sub[sub["run_id"].astype(str).isin(stuck)]
            ax.scatter(marked["x"], marked["ratio"], marker="x", s=40, color="black",
                       zorder=5, lw=1.2)
        ax.axhline(1.0, color="grey", ls=":", lw=1)
        ax.set_xticks(depths)
        ax.set_title("at initialization" if when == "init" else "after training")
        ax.set_xlabel("depth (number of hidden layers)")
        ax.set_ylabel("‖∂loss/∂W¹‖ / ‖∂loss/∂Wᴸ‖ (log scale)")
    legend = axes[1].get_legend()
    if legend is not None:
        sns.move_legend(axes[1], "center left", bbox_to_anchor=(1.02, 0.5), title=HUE_TITLE)
    spread = ", bars = min-max over seeds" if seeds > 1 else " (one run each)"
    fig.suptitle("How much of the output layer's gradient reaches layer 1, by depth\n"
                 f"(geometric mean over seeds{spread}; dotted 1 = nothing lost{chance_note})")
    return fig


def _gradient_ratio_one_depth(ratios: pd.DataFrame, colors: dict, stuck: set[str],
                              depth: int, chance_note: str) -> Figure:
    """One depth: a column per configuration, each run a dot, init (open) beside end
    (filled), the geometric mean over runs as a short bar, an arrow from one to the other."""
    order = list(colors)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(order) + 2.5), 4.2),
                           layout="constrained")
    ax.set_yscale("log")
    offsets = {"init": -0.17, "final": 0.17}
    for i, label in enumerate(order):
        sub = ratios[ratios["label"] == label]
        means = {}
        for when, dx in offsets.items():
            part = sub[sub["when"] == when]
            if part.empty:
                continue
            x = np.full(len(part), i + dx) + np.linspace(-0.04, 0.04, len(part))
            filled = when == "final"
            ax.scatter(x, part["ratio"], s=36, marker="o", zorder=4, lw=1.4,
                       facecolor=colors[label] if filled else "white",
                       edgecolor=colors[label])
            marked = part["run_id"].astype(str).isin(stuck).to_numpy()
            if filled and marked.any():
                ax.scatter(x[marked], part["ratio"][marked], marker="x", s=70, color="black",
                           zorder=5, lw=1.4)
            means[when] = geometric_mean(part["ratio"])
            ax.hlines(means[when], i + dx - 0.1, i + dx + 0.1, color=colors[label], lw=2.5,
                      zorder=3)
        if len(means) == 2:
            ax.annotate("", (i + offsets["final"] - 0.1, means["final"]),
                        (i + offsets["init"] + 0.1, means["init"]),
                        arrowprops={"arrowstyle": "->", "color": colors[label], "lw": 1})
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_xticks(range(len(order)), order)
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_xlabel(HUE_TITLE)
    ax.set_ylabel("‖∂loss/∂W¹‖ / ‖∂loss/∂Wᴸ‖ (log scale)")
    handles = [Line2D([], [], marker="o", ls="", mfc="white", mec="grey",
                      label="at initialization"),
               Line2D([], [], marker="o", ls="", color="grey", label="after training"),
               Line2D([], [], color="grey", lw=2.5, label="geometric mean")]
    if chance_note:
        handles.append(Line2D([], [], marker="x", ls="", color="black",
                              label="ended at chance"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5),
              fontsize="small")
    ax.set_title(f"How much of the output layer's gradient reaches layer 1 (depth {depth})\n"
                 f"each dot one run; dotted 1 = nothing lost{chance_note}", fontsize="medium")
    return fig


@_styled
def plot_learning_curves(histories: pd.DataFrame, runs: pd.DataFrame | None = None) -> Figure:
    """Loss (log scale) and accuracy against epoch, train (solid) and validation (dashed), one
    colour per configuration; mean over seeds (geometric for the loss) with a band of ± 2
    standard errors (about a 95% interval; none with a single seed). One depth: loss and
    accuracy side by side; several: one column per depth, loss above accuracy. The accuracy
    panels show chance (dashed) and the band of accuracies still at chance."""
    wanted = ("train/loss", "val/loss", "train/accuracy", "val/accuracy")
    data = _require(histories[histories["metric"].isin(wanted)], "loss or accuracy")
    colors = palette(data)
    chance = chance_of_runs(data, runs)
    # Mean and standard error with pandas: a bootstrap per epoch took minutes on 500 epochs.
    # Loss is averaged in log space (a geometric mean and a band that stays positive on the
    # log axis), accuracy arithmetically.
    by = ["label", "depth", "metric", "epoch"]
    is_loss = data["metric"].astype(str).str.endswith("loss")
    data = pd.concat([seed_mean(_positive(data[is_loss]), by, log=True),
                      seed_mean(data[~is_loss], by)], ignore_index=True)
    split_quantity = data["metric"].astype(str).str.split("/", expand=True)
    data["data"] = split_quantity[0].map({"train": "train", "val": "validation"})
    data["quantity"] = split_quantity[1]
    data[HUE_TITLE] = data["label"].astype(object)
    depths = sorted(data["depth"].dropna().unique().astype(int))
    layout = ({"col": "quantity", "col_order": ["loss", "accuracy"], "height": 3.6,
               "aspect": 1.25} if len(depths) <= 1 else
              {"row": "quantity", "row_order": ["loss", "accuracy"], "col": "depth",
               "height": 3.0, "aspect": 1.3})
    grid = sns.relplot(data, x="epoch", y="value", hue=HUE_TITLE, hue_order=list(colors),
                       palette=colors, style="data", style_order=["train", "validation"],
                       kind="line", estimator=None,
                       facet_kws={"sharey": "row" if len(depths) > 1 else False}, **layout)
    for key, ax in grid.axes_dict.items():
        if len(depths) <= 1:
            quantity, depth = key, (depths[0] if depths else None)
        else:
            quantity, depth = key
        panel = data[(data["quantity"] == quantity)
                     & ((data["depth"] == depth) if depth is not None else True)]
        for (label, _), band in panel.groupby([HUE_TITLE, "data"], sort=False):
            ax.fill_between(band["epoch"], band["low"], band["high"], color=colors[label],
                            alpha=0.2, linewidth=0)
        if quantity == "loss":
            ax.set_yscale("log")
            ax.set_ylabel("loss (log scale)")
        else:
            draw_chance(ax, chance)
            ax.set_ylabel("accuracy")
        ax.set_title(f"{quantity}" + (f", depth {depth}" if depth is not None else ""))
    grid.set_xlabels("epoch")
    grid.figure.suptitle("Learning curves: mean over seeds (geometric for the loss),\n"
                         "band = ± 2 standard errors of that mean", y=1.0, va="top")
    # Room for the two-line title above the panels' own titles (about 0.8 inch).
    grid.figure.subplots_adjust(top=1 - 0.8 / grid.figure.get_figheight())
    return grid.figure


def _tick_step(n: int, most: int = 8) -> int:
    """A round label step (1, 2, 5, 10, 20, 50, ...) giving at most ``most`` labels."""
    candidates = (base * 10**power for power in range(12) for base in (1, 2, 5))
    return next(step for step in candidates if n / step <= most)


#: Below this fraction of saturated (dead) units in every layer and epoch, saturation cannot
#: be what kept a run from learning.
SATURATION_LOW = 0.1


@_styled
def plot_saturation_heatmaps(histories: pd.DataFrame, depth: int | None = None,
                             runs: pd.DataFrame | None = None) -> Figure:
    """Layer x epoch heatmaps, one per configuration: the fraction of saturated units for
    saturating activations (sigmoid, tanh, ...), of dead units for ReLU; mean over seeds,
    hidden layers only, layer 1 at the bottom. A panel whose runs ended at chance accuracy
    (``runs``' ``at_chance``) while fewer than :data:`SATURATION_LOW` of any layer's units
    were saturated says so: saturation is not what stopped them."""
    stuck = _at_chance_ids(runs)
    data, depth = _one_depth(histories[histories["metric"].isin(("saturation",
                                                                  "dead_fraction"))], depth)
    data = data.dropna(subset=["layer"])
    data = data[data["layer"] < data["n_layers"]]  # the output layer has its own activation
    order = label_order(data)
    fig, axes = plt.subplots(1, len(order), figsize=(4.2 * len(order) + 1, 3.8), squeeze=False,
                             layout="constrained")
    image = None
    for ax, label in zip(axes[0], order, strict=True):
        sub = data[data["label"] == label]
        activation = sub["activation"].iloc[0]
        metric = "dead_fraction" if activation in RELU_LIKE else "saturation"
        grid = sub[sub["metric"] == metric].pivot_table(index="layer", columns="epoch",
                                                        values="value", aggfunc="mean")
        grid = grid.sort_index(ascending=False)
        sns.heatmap(grid, vmin=0, vmax=1, cmap="magma", cbar=False, ax=ax,
                    xticklabels=_tick_step(grid.shape[1]))
        image = ax.collections[0]
        what = "dead" if metric == "dead_fraction" else "saturated"
        ax.set_title(f"{label}: {what} units")
        ids = set(sub["run_id"].astype(str))
        peak = float(np.nanmax(grid.to_numpy())) if grid.size else np.nan
        if ids & stuck and np.isfinite(peak) and peak < SATURATION_LOW:
            n_stuck = len(ids & stuck)
            ax.text(0.5, 0.5, f"at most {peak:.0%} {what}:\nsaturation is not what stopped\n"
                    f"{'this run' if len(ids) == 1 else f'{n_stuck} of {len(ids)} runs'} "
                    "(ended at chance)", transform=ax.transAxes, ha="center", va="center",
                    fontsize="small", color="black",
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85})
        ax.set_xlabel("epoch")
        ax.set_ylabel("hidden layer (1 = input side)")
        ax.tick_params(axis="y", rotation=0)
        ax.tick_params(axis="x", rotation=0)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="fraction of the layer's units",
                     shrink=0.9)
    fig.suptitle(f"Saturated (sigmoid, tanh) and dead (ReLU) units per hidden layer over "
                 f"training (depth {depth}, mean over seeds)\nsaturated: f'(z) near 0 for a "
                 f"sample; dead: saturated on every sample, so the unit passes no gradient")
    return fig


@_styled
def plot_final_accuracy_vs_depth(runs: pd.DataFrame) -> Figure:
    """Final validation accuracy (train accuracy when there is no validation set) against
    depth, one line per configuration; mean over seeds, bars = min-max. With a single depth
    (a plain activation sweep), one bar per configuration with each run as a dot."""
    _, metric = final_accuracy(runs)
    data = _require(runs.dropna(subset=["depth", metric]), "final accuracy").copy()
    data["depth"] = data["depth"].astype(int)
    colors = palette(data)
    split = "validation" if metric.startswith("val") else "training"
    depths = sorted(data["depth"].unique())
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    if len(depths) == 1:
        sns.barplot(data, x="label", y=metric, hue="label", order=list(colors),
                    hue_order=list(colors), palette=colors, errorbar=SEED_RANGE, alpha=0.6,
                    ax=ax, legend=False)
        sns.stripplot(data, x="label", y=metric, order=list(colors), color="black", size=5,
                      ax=ax)
        ax.set_xlabel(HUE_TITLE)
        ax.set_title(f"Final {split} accuracy per activation (depth {depths[0]}; bar = mean, "
                     f"dots = runs)")
    else:
        sns.lineplot(data, x="depth", y=metric, hue="label", hue_order=list(colors),
                     palette=colors, estimator="mean", errorbar=SEED_RANGE, err_style="bars",
                     marker="o", ax=ax)
        ax.set_xticks(depths)
        ax.set_xlabel("depth (number of hidden layers)")
        sns.move_legend(ax, "center left", bbox_to_anchor=(1.02, 0.5), title=HUE_TITLE)
        ax.set_title(f"Final {split} accuracy by depth (mean over seeds, bars = min-max)")
    draw_chance(ax, chance_of_runs(data, runs))
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"final {split} accuracy")
    return fig


def all_figures(runs: pd.DataFrame, histories: pd.DataFrame) -> dict[str, Figure]:
    """Every figure of the study the data allow, keyed by a file-friendly name; a figure whose
    metrics are missing is left out with a warning."""
    plots = {
        "vanishing_profile": lambda: plot_vanishing_profile(histories),
        "grad_weight_ratio": lambda: plot_grad_weight_ratio(histories),
        "gradient_ratio_vs_depth": lambda: plot_gradient_ratio_vs_depth(histories, runs),
        "learning_curves": lambda: plot_learning_curves(histories, runs),
        "saturation_heatmaps": lambda: plot_saturation_heatmaps(histories, runs=runs),
        "final_accuracy_vs_depth": lambda: plot_final_accuracy_vs_depth(runs),
    }
    drawn = {}
    for name, plot in plots.items():
        try:
            drawn[name] = plot()
        except MissingData as missing:
            warnings.warn(f"figure {name} left out: {missing}", stacklevel=2)
    return drawn


def save_figures(figures: dict[str, Figure], out: Path, dpi: int = 120
                 ) -> tuple[list[Path], dict[str, str]]:
    """Write each figure as ``out/<name>.png`` and close it; returns (the files, a link title
    -> file name for each, as the summaries list them)."""
    out.mkdir(parents=True, exist_ok=True)
    written, links = [], {}
    for name, fig in figures.items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
        links[name.replace("_", " ")] = path.name
    return written, links
