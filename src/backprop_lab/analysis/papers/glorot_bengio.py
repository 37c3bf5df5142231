"""Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
networks": their figures drawn from the tracked runs, their claims checked, their Table 1 beside
ours.

Configurations are (activation, init) with init ``standard`` (their U[-1/sqrt(n), 1/sqrt(n)])
or ``xavier_uniform`` (their "normalized" init, "N" in their Table 1). Every number comes from
the runs' histories and histograms; the rules that decide "holds?" are stated in each claim.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from backprop_lab.engine.history import layer_metric_name

from .. import mean_field
from ..histograms import pooled, quantile
from ..summary import markdown_table
from .common import Claim, PaperReport, decide, difference, spearman_p

ACTIVATIONS = ("sigmoid", "tanh", "softsign")
INITS = ("standard", "xavier_uniform")
INIT_NAME = {"standard": "standard", "xavier_uniform": "normalized"}
#: Their Table 1, test error (%) on MNIST, for the configurations they report.
TABLE1_MNIST = {("softsign", "standard"): 1.64, ("softsign", "xavier_uniform"): 1.72,
                ("tanh", "standard"): 1.76, ("tanh", "xavier_uniform"): 1.64,
                ("sigmoid", "standard"): 2.21}
EARLY = 0.1  # "early": within the first 10% of the epochs


def config_name(activation: str, init: str) -> str:
    """Their Table 1's naming: ``tanh``, ``tanh N``."""
    return f"{activation} N" if init == "xavier_uniform" else str(activation)


def _datasets(frame: pd.DataFrame) -> list[str]:
    preferred = ("mnist1d", "digits")
    found = [str(d) for d in frame["dataset"].dropna().unique()]
    return sorted(found, key=lambda d: preferred.index(d) if d in preferred else 99)


def _top_hidden(histories: pd.DataFrame) -> int:
    return int(histories["n_layers"].max()) - 1


# -- tables -------------------------------------------------------------------------------------
def error_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Held-out error (%) = 100 (1 - final val/accuracy) per data set and configuration: mean,
    std and min-max over seeds, rank within the data set, and their Table 1 value (MNIST)."""
    data = runs.dropna(subset=["val/accuracy"]).copy()
    data["error"] = 100.0 * (1.0 - data["val/accuracy"].astype(float))
    rows = []
    for (dataset, activation, init), sub in data.groupby(["dataset", "activation", "init"]):
        rows.append({"dataset": dataset, "config": config_name(activation, init),
                     "activation": activation, "init": init, "runs": len(sub),
                     "error % mean": sub["error"].mean(), "std": sub["error"].std(ddof=1),
                     "min": sub["error"].min(), "max": sub["error"].max(),
                     "paper (MNIST)": TABLE1_MNIST.get((activation, init), np.nan)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["rank"] = table.groupby("dataset")["error % mean"].rank(method="min").astype(int)
    order = {d: k for k, d in enumerate(_datasets(table))}
    act = {a: k for k, a in enumerate(ACTIVATIONS)}
    return table.sort_values(["dataset", "activation", "init"],
                             key=lambda s: s.map(order) if s.name == "dataset"
                             else s.map(act) if s.name == "activation" else s
                             ).reset_index(drop=True)


def _ordering(table: pd.DataFrame, dataset: str) -> tuple[str, str, float, float]:
    """(their order, ours, Spearman correlation, its exact one-sided p-value) over the five
    configurations of Table 1."""
    sub = table[(table["dataset"] == dataset) & table["paper (MNIST)"].notna()]
    theirs = sub.sort_values("paper (MNIST)")["config"].tolist()
    ours = sub.sort_values("error % mean")["config"].tolist()
    rho, p = spearman_p(sub["paper (MNIST)"], sub["error % mean"])
    return " < ".join(theirs), " < ".join(ours), rho, p


# -- claims -------------------------------------------------------------------------------------
def _series(histories: pd.DataFrame, metric: str, layer: int, **where) -> pd.Series:
    sub = histories[(histories["metric"] == metric) & (histories["layer"] == layer)]
    for key, value in where.items():
        sub = sub[sub[key] == value]
    return sub.groupby("epoch")["value"].mean()


def _per_run(histories: pd.DataFrame, metric: str, layer: int, epoch: int = 0,
             **where) -> pd.Series:
    """One value per run: ``metric`` of ``layer`` at ``epoch``, for the runs matching where."""
    sub = histories[(histories["metric"] == metric) & (histories["layer"] == layer)
                    & (histories["epoch"] == epoch)]
    for key, value in where.items():
        sub = sub[sub[key] == value]
    return sub.groupby("run_id", observed=True)["value"].first().astype(float)


def _pm(diff: float, se: float) -> str:
    return f"{diff:+.3g} ± {se:.2g}"


SEEDS_RULE = "2 SE: the difference of the means over seeds against its standard error"


def claims(runs: pd.DataFrame, histories: pd.DataFrame) -> list[Claim]:
    out: list[Claim] = []
    top = _top_hidden(histories)
    datasets = _datasets(runs)
    for dataset in datasets:
        sub = histories[(histories["metric"] == "act_mean") & (histories["layer"] == top)
                        & (histories["dataset"] == dataset)
                        & (histories["activation"] == "sigmoid")
                        & (histories["init"] == "standard")]
        if sub.empty:
            continue
        epochs = int(sub["epoch"].max())
        early = max(1, int(round(EARLY * epochs)))
        falls, said = 0, []
        for _, run in sub.groupby("run_id", observed=True):
            curve = run.set_index("epoch")["value"].sort_index().astype(float)
            start, at_early = float(curve.iloc[0]), float(curve.loc[:early].min())
            falls += bool(at_early < 0.5 * start)
            said.append(f"{start:.3f} -> {at_early:.3f} -> {float(curve.iloc[-1]):.3f}")
        n = sub["run_id"].nunique()
        out.append(Claim(
            f"{dataset}: with sigmoid (standard init) the top hidden layer's mean activation "
            f"falls toward 0 early in training (Fig. 2; rule: in every seed, below half its "
            f"initial value within the first {EARLY:.0%} of the epochs)",
            f"{layer_metric_name('act_mean', top)} at init -> lowest by epoch {early} -> at "
            f"epoch {epochs}, per seed: {', '.join(said)}; {falls} of {n} seeds fall below "
            f"half", falls == n))
    first = datasets[0] if datasets else None
    if first is not None:
        for activation in ACTIVATIONS:
            ratios = {}
            for init in INITS:
                where = {"dataset": first, "activation": activation, "init": init}
                d1 = _per_run(histories, "delta_std", 1, **where)
                dt = _per_run(histories, "delta_std", top, **where)
                ratio = (d1 / dt).dropna()
                if len(ratio):
                    ratios[init] = ratio
            if len(ratios) == 2:
                std, norm = ratios["standard"], ratios["xavier_uniform"]
                # how far from 1 (no shrinking): |log ratio|, standard minus normalized
                diff, se = difference(np.abs(np.log(std)), np.abs(np.log(norm)))
                closer = decide(diff, se)
                holds = None if closer is None else bool(closer and (std < 1).all())
                out.append(Claim(
                    f"{first}, {activation}: at initialization the back-propagated gradient "
                    f"shrinks toward the input with standard init, and less with normalized "
                    f"init (Sec. 4.2.2, Fig. 7; rule: std(δ) layer 1 / layer {top} below 1 in "
                    f"every standard seed, and |ln ratio| smaller for normalized by {SEEDS_RULE})",
                    f"std(δ) layer 1 / layer {top} (geometric mean over seeds): standard "
                    f"{float(np.exp(np.log(std).mean())):.3g} ({int((std < 1).sum())} of "
                    f"{len(std)} below 1), normalized {float(np.exp(np.log(norm).mean())):.3g}; "
                    f"|ln ratio| standard - normalized {_pm(diff, se)}", holds))
        ratios = {}
        for init in INITS:
            where = {"dataset": first, "activation": "tanh", "init": init}
            a1 = _per_run(histories, "act_std", 1, **where)
            at = _per_run(histories, "act_std", top, **where)
            ratio = (at / a1).dropna()
            if len(ratio):
                ratios[init] = ratio
        if len(ratios) == 2:
            diff, se = difference(ratios["xavier_uniform"], ratios["standard"])
            out.append(Claim(
                f"{first}, tanh: at initialization the activations of higher layers concentrate "
                f"at 0 with standard init, less with normalized init (Fig. 6; rule: std(a) "
                f"layer {top} / layer 1 smaller for standard by {SEEDS_RULE})",
                f"std(a) layer {top} / layer 1 (mean over seeds): standard "
                f"{ratios['standard'].mean():.3f}, normalized "
                f"{ratios['xavier_uniform'].mean():.3f}; normalized - standard {_pm(diff, se)}",
                decide(diff, se)))
    data = runs.dropna(subset=["val/accuracy"]).copy()
    data["error"] = 100.0 * (1.0 - data["val/accuracy"].astype(float))
    data["config"] = [config_name(a, i) for a, i in zip(data["activation"], data["init"])]
    table = error_table(runs)
    for dataset in datasets:
        sub = table[table["dataset"] == dataset].set_index("config")
        if sub.empty:
            continue
        errors = {c: g["error"].to_numpy() for c, g in data[data["dataset"] == dataset
                                                            ].groupby("config")}
        mean = sub["error % mean"]
        in_paper = sub[sub["paper (MNIST)"].notna()]
        if "sigmoid" in mean.index and len(in_paper) > 1:
            others = [c for c in in_paper.index if c != "sigmoid"]
            gaps = {c: difference(errors["sigmoid"], errors[c]) for c in others}
            verdicts = [decide(*gaps[c]) for c in others]
            holds = (False if any(v is False for v in verdicts)
                     else True if all(verdicts) else None)
            out.append(Claim(
                f"{dataset}: sigmoid has the highest test error of Table 1's five "
                f"configurations (2.21% on MNIST; rule: above each other one by {SEEDS_RULE})",
                "held-out error % (mean over seeds): " + ", ".join(
                    f"{c} {v:.1f}" for c, v in in_paper["error % mean"].items())
                + "; sigmoid minus " + ", ".join(f"{c} {_pm(*gaps[c])}" for c in others),
                holds))
        if {"tanh", "tanh N"} <= set(mean.index):
            diff, se = difference(errors["tanh"], errors["tanh N"])
            out.append(Claim(
                f"{dataset}: normalized init lowers tanh's test error (1.76% -> 1.64%; rule: "
                f"{SEEDS_RULE})",
                f"tanh {mean['tanh']:.2f}%, tanh N {mean['tanh N']:.2f}% (mean over "
                f"{len(errors['tanh'])} and {len(errors['tanh N'])} seeds); tanh - tanh N "
                f"{_pm(diff, se)} points", decide(diff, se)))
        if {"softsign", "tanh"} <= set(mean.index):
            diff, se = difference(errors["tanh"], errors["softsign"])
            out.append(Claim(
                f"{dataset}: softsign beats tanh with standard init (1.64% vs 1.76%; rule: "
                f"{SEEDS_RULE})",
                f"softsign {mean['softsign']:.2f}%, tanh {mean['tanh']:.2f}%; tanh - softsign "
                f"{_pm(diff, se)} points", decide(diff, se)))
        if len(in_paper) == 5:
            theirs, ours, rho, p = _ordering(table, dataset)
            out.append(Claim(
                f"{dataset}: the ordering of Table 1 (theirs: {theirs}; rule: Spearman's "
                f"rank correlation of the mean errors, exact one-sided p < 0.05 over the 120 "
                f"orderings)",
                f"ours: {ours}; Spearman {rho:.2f} (ties in theirs), p = {p:.2f}",
                bool(p < 0.05)))
    factors = mean_field.factor_table(histories, runs)
    if not factors.empty:
        worst = float(np.max(np.abs(factors["ratio"] - 1)))
        out.append(Claim(
            "Mean-field theory predicts the per-layer factor of std(δ) at initialization "
            "(ours, not the paper's; rule: every configuration within 5%)",
            f"measured / mean field between {factors['ratio'].min():.3f} and "
            f"{factors['ratio'].max():.3f}; linear regime / measured between "
            f"{(factors['linear'] / factors['measured']).min():.3f} and "
            f"{(factors['linear'] / factors['measured']).max():.3f}", worst < 0.05))
    return out


# -- figures ------------------------------------------------------------------------------------
def _grid(rows: int, cols: int, width: float = 4.6, height: float = 3.4):
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                        layout="constrained")


def plot_sigmoid_activations(histories: pd.DataFrame) -> Figure:
    """Their Fig. 2: mean (line) and std (band: mean ± std) of each hidden layer's sigmoid
    activations over training, mean over seeds; one row per data set, one column per init."""
    data = histories[(histories["activation"] == "sigmoid")
                     & histories["metric"].isin(["act_mean", "act_std"])]
    if data.empty:
        raise ValueError("no sigmoid runs with act_mean in the data")
    top = _top_hidden(histories)
    datasets = _datasets(data)
    colors = sns.color_palette("viridis", top)
    with sns.axes_style("whitegrid"):
        fig, axes = _grid(len(datasets), len(INITS), 5.2, 3.4)
        for r, dataset in enumerate(datasets):
            for c, init in enumerate(INITS):
                ax = axes[r, c]
                for layer in range(1, top + 1):
                    mean = _series(data, "act_mean", layer, dataset=dataset, init=init)
                    std = _series(data, "act_std", layer, dataset=dataset, init=init)
                    if mean.empty:
                        continue
                    ax.plot(mean.index, mean, color=colors[layer - 1], label=f"layer {layer}")
                    ax.fill_between(mean.index, mean - std, mean + std, color=colors[layer - 1],
                                    alpha=0.12, lw=0)
                ax.set_title(f"{dataset}, sigmoid, {INIT_NAME[init]} init")
                ax.set_xlabel("epoch")
                ax.set_ylabel("activation value")
                ax.set_ylim(-0.02, 1.02)
        axes[0, -1].legend(title="hidden layer", fontsize="small")
    fig.suptitle("Glorot & Bengio Fig. 2: mean (line) and std (band) of sigmoid activations per "
                 f"hidden layer during training\n(top hidden layer = layer {top}; mean over seeds)")
    return fig


def percentile_frame(histograms: pd.DataFrame, histories: pd.DataFrame, q: float = 0.98
                     ) -> pd.DataFrame:
    """Per (data set, activation, init, layer, epoch): the q-quantile of the activations
    (from the 64-bin histograms, mean over seeds) and their std (history's act_std)."""
    acts = histograms[histograms["kind"] == "activations"].copy()
    acts["p"] = [quantile(c, e, q) for c, e in zip(acts["counts"], acts["edges"])]
    perc = acts.groupby(["dataset", "activation", "init", "layer", "epoch"],
                        as_index=False)["p"].mean()
    std = histories[histories["metric"] == "act_std"].astype({"activation": object,
                                                              "init": object,
                                                              "dataset": object})
    std = std.groupby(["dataset", "activation", "init", "layer", "epoch"], as_index=False,
                      observed=True)["value"].mean().rename(columns={"value": "std"})
    return perc.merge(std, on=["dataset", "activation", "init", "layer", "epoch"], how="left")


def plot_percentiles(histograms: pd.DataFrame, histories: pd.DataFrame) -> Figure:
    """Their Fig. 3: 98th percentile (markers) and std (lines) of the activations per hidden
    layer over training, tanh and softsign (rows), standard and normalized init (columns), first
    data set."""
    frame = percentile_frame(histograms, histories)
    dataset = _datasets(frame)[0]
    top = _top_hidden(histories)
    colors = sns.color_palette("viridis", top)
    rows = [a for a in ("tanh", "softsign") if a in set(frame["activation"])]
    if not rows:
        raise ValueError("no tanh or softsign histograms in the data")
    with sns.axes_style("whitegrid"):
        fig, axes = _grid(len(rows), len(INITS), 5.2, 3.4)
        for r, activation in enumerate(rows):
            for c, init in enumerate(INITS):
                ax = axes[r, c]
                sub = frame[(frame["dataset"] == dataset) & (frame["activation"] == activation)
                            & (frame["init"] == init)]
                for layer in range(1, top + 1):
                    s = sub[sub["layer"] == layer].sort_values("epoch")
                    ax.plot(s["epoch"], s["p"], "o", ms=3, color=colors[layer - 1],
                            label=f"layer {layer}")
                    ax.plot(s["epoch"], s["std"], "-", color=colors[layer - 1], lw=1)
                ax.set_title(f"{dataset}, {activation}, {INIT_NAME[init]} init")
                ax.set_xlabel("epoch")
                ax.set_ylabel("98th percentile (dots), std (lines)")
                ax.set_ylim(0, 1.05)
        axes[0, -1].legend(title="hidden layer", fontsize="small")
    fig.suptitle("Glorot & Bengio Fig. 3: 98th percentile (from 64-bin histograms) and std of "
                 "the activations per hidden layer during training (mean over seeds)")
    return fig


def plot_histograms_at_init(histograms: pd.DataFrame, kind: str, title: str) -> Figure:
    """Their Figs. 6-8: normalized histograms per hidden layer at initialization (pooled over
    seeds), one row per activation, standard vs normalized init in columns, first data set."""
    data = histograms[(histograms["kind"] == kind) & (histograms["epoch"] == 0)]
    if data.empty:
        raise ValueError(f"no {kind} histograms at epoch 0 in the data")
    dataset = _datasets(data)[0]
    data = data[data["dataset"] == dataset]
    top = int(data["layer"].max()) - 1
    colors = sns.color_palette("viridis", top)
    activations = [a for a in ACTIVATIONS if a in set(data["activation"])]
    with sns.axes_style("whitegrid"):
        fig, axes = _grid(len(activations), len(INITS), 5.0, 3.0)
        for r, activation in enumerate(activations):
            for c, init in enumerate(INITS):
                ax = axes[r, c]
                for layer in range(1, top + 1):
                    rows = data[(data["activation"] == activation) & (data["init"] == init)
                                & (data["layer"] == layer)]
                    if rows.empty:
                        continue
                    x, d = pooled(rows)
                    d = np.where(d > 0, d, np.nan)  # empty bins: a gap on the log axis
                    ax.plot(x, d, color=colors[layer - 1], label=f"layer {layer}")
                ax.set_yscale("log")
                ax.set_title(f"{activation}, {INIT_NAME[init]} init")
                ax.set_ylabel("density (log)")
        axes[0, -1].legend(title="hidden layer", fontsize="small")
    fig.suptitle(f"{title}\n({dataset}, at initialization, pooled over seeds; each histogram "
                 f"normalized to area 1)")
    return fig


def plot_theory_profile(histories: pd.DataFrame, runs: pd.DataFrame) -> Figure:
    """std(δ) per layer at initialization, measured (solid, geometric mean over seeds) against
    mean-field theory (dashed) and the linear regime (dotted), anchored at the top hidden layer;
    one panel per activation, one colour per init, first data set."""
    prof = mean_field.profile_table(histories, runs, "delta_std")
    if prof.empty:
        raise ValueError("no delta_std at initialization in the data")
    dataset = _datasets(prof)[0]
    prof = prof[prof["dataset"] == dataset]
    colors = dict(zip(INITS, sns.color_palette("colorblind", len(INITS))))
    activations = [a for a in ACTIVATIONS if a in set(prof["activation"])]
    with sns.axes_style("whitegrid"):
        fig, axes = _grid(1, len(activations), 4.4, 3.6)
        for ax, activation in zip(axes[0], activations):
            for init in INITS:
                sub = prof[(prof["activation"] == activation) & (prof["init"] == init)]
                if sub.empty:
                    continue
                g = sub.groupby("layer")[["measured", "mean_field", "linear"]].agg(
                    lambda v: float(np.exp(np.log(v.astype(float)).mean())))
                ax.plot(g.index, g["measured"], "o-", color=colors[init],
                        label=f"{INIT_NAME[init]}: measured")
                ax.plot(g.index, g["mean_field"], "--", color=colors[init],
                        label=f"{INIT_NAME[init]}: mean field")
                ax.plot(g.index, g["linear"], ":", color=colors[init],
                        label=f"{INIT_NAME[init]}: linear regime")
            ax.set_yscale("log")
            ax.set_title(activation)
            ax.set_xlabel("layer l (1 = input side)")
            ax.set_ylabel("std of back-propagated error δ (log)")
        axes[0, -1].legend(fontsize="x-small")
    fig.suptitle(f"Back-propagated error per layer at initialization ({dataset}): measured vs "
                 f"mean-field theory and the linear regime")
    return fig


def plot_error_curves(histories: pd.DataFrame) -> Figure:
    """Held-out error over training per configuration (mean over seeds, band min-max), one panel
    per data set."""
    data = histories[histories["metric"] == "val/accuracy"].copy()
    if data.empty:
        raise ValueError("no val/accuracy in the data")
    data["error %"] = 100 * (1 - data["value"])
    data["config"] = [config_name(a, i) for a, i in zip(data["activation"], data["init"])]
    order = [config_name(a, i) for a in ACTIVATIONS for i in INITS]
    datasets = _datasets(data)
    with sns.axes_style("whitegrid"):
        fig, axes = _grid(1, len(datasets), 5.4, 3.8)
        for ax, dataset in zip(axes[0], datasets):
            sub = data[data["dataset"] == dataset]
            sns.lineplot(sub, x="epoch", y="error %", hue="config",
                         hue_order=[o for o in order if o in set(sub["config"])],
                         palette="colorblind", errorbar=("pi", 100), ax=ax)
            ax.set_title(f"{dataset}: held-out error")
            ax.set_ylim(0, 100)
    fig.suptitle("Held-out error during training (mean over seeds, band = min-max)")
    return fig


def report(sweep, histograms: pd.DataFrame) -> PaperReport:
    runs, histories = sweep.runs, sweep.histories
    table = error_table(runs)
    factors = mean_field.factor_table(histories, runs)
    tables = {}
    if not table.empty:
        tables["Table 1: held-out error (%) beside theirs (MNIST test error)"] = markdown_table(
            table.drop(columns=["activation", "init"]), floatfmt=".3g")
    if not factors.empty:
        tables["Per-layer factor of std(δ) at initialization: measured vs mean field and the "
               "linear regime"] = markdown_table(factors, floatfmt=".4g")
    variances = mean_field.variance_table(histories, runs)
    if not variances.empty:
        first = _datasets(variances)[0]
        wide = variances[variances["dataset"] == first].pivot(
            index="label", columns="layer", values="ratio").reset_index()
        wide.columns = ["configuration", *(f"layer {c}" for c in wide.columns[1:])]
        tables[f"Pre-activation variance at initialization ({first}): preact_var/layer_l / "
               f"q^l of the variance map (geometric mean over seeds)"] = markdown_table(
            wide, floatfmt=".3f")
    scales = mean_field.depth_scale_table(runs)
    if not scales.empty:
        tables["Mean-field fixed point q*, chi_1, the gradient's depth scale "
               "xi_grad = -1/ln(chi_1) and the correlation depth scale xi_c of each "
               "configuration (equal widths)"] = markdown_table(scales, floatfmt=".3g")
    figures = {
        "fig2_sigmoid_activations": lambda: plot_sigmoid_activations(histories),
        "fig3_percentiles": lambda: plot_percentiles(histograms, histories),
        "fig6_activation_histograms": lambda: plot_histograms_at_init(
            histograms, "activations", "Glorot & Bengio Fig. 6: activation values per hidden "
            "layer"),
        "fig7_delta_histograms": lambda: plot_histograms_at_init(
            histograms, "deltas", "Glorot & Bengio Fig. 7: back-propagated gradients δ = "
            "∂loss/∂z per hidden layer"),
        "fig8_weight_gradient_histograms": lambda: plot_histograms_at_init(
            histograms, "grads", "Glorot & Bengio Fig. 8: weight gradients ∂loss/∂W per "
            "hidden layer"),
        "theory_profile": lambda: plot_theory_profile(histories, runs),
        "error_curves": lambda: plot_error_curves(histories),
    }
    return PaperReport(
        title="Glorot & Bengio 2010: the difficulty of training deep feedforward networks",
        setup=("Their setup: 5 hidden layers of 1000 units, sigmoid, tanh and softsign, "
               "standard init U[-1/sqrt(n), 1/sqrt(n)] vs normalized init (N), SGD with "
               "mini-batches of 10, MNIST and others. Ours: see the runs' params (width, "
               "epochs, batch, learning rate); data MNIST-1D and digits, error measured on the "
               "held-out (validation) split, so their MNIST numbers are beside ours for the "
               "ordering, not the values."),
        claims=claims(runs, histories),
        tables=tables,
        figures=figures,
    )
