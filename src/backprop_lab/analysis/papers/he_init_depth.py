"""He et al. 2015, "Delving Deep into Rectifiers", Fig. 3: a 30-layer ReLU network trains with
Var(W) = 2/fan_in and stalls with Xavier's init; at 22 layers both converge.

"Converges" is decided from the data by one rule, stated in the report: a run's training loss
falls below half its value at initialization by the last epoch; "stalls": it stays above 95% of
it; a run that diverged did neither, and is counted as an outcome of its own. A claim about a
configuration is decided by a count over at least :data:`MIN_SEEDS` seeds (a majority); with
fewer it is undecided.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .. import mean_field
from ..summary import markdown_table
from .common import Claim, PaperReport, fmt

CONVERGED, STALLED = 0.5, 0.95
MIN_SEEDS = 5
INIT_ORDER = ("he", "xavier_uniform", "lecun", "standard")


def _inits(frame: pd.DataFrame) -> list[str]:
    found = [str(i) for i in frame["init"].dropna().unique()]
    return sorted(found, key=lambda i: INIT_ORDER.index(i) if i in INIT_ORDER else 99)


def run_table(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """One row per run: depth, init, seed, outcome, training loss at init and at its last
    epoch, their ratio (inf for a run that diverged), and whether it converged or stalled."""
    loss = histories[histories["metric"] == "train/loss"]
    rows = []
    for run_id, sub in loss.groupby("run_id", observed=True):
        sub = sub.sort_values("epoch")
        first, last = float(sub["value"].iloc[0]), float(sub["value"].iloc[-1])
        outcome = runs.set_index("run_id")["outcome"].get(run_id, "finished")
        ratio = last / first if outcome == "finished" and np.isfinite(last) else np.inf
        rows.append({"run_id": run_id, "depth": int(sub["depth"].iloc[0]),
                     "init": str(sub["init"].iloc[0]), "outcome": outcome,
                     "loss at init": first, "final loss": last, "final / init": ratio,
                     "converged": ratio < CONVERGED, "stalled": STALLED < ratio < np.inf})
    return pd.DataFrame(rows)


def loss_table(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """Per depth and init: runs, how many converged / stalled / diverged, the median over runs
    of final / initial training loss, the first epoch the mean loss of the finished runs is
    below half its initial value, and the final validation accuracy of the finished runs
    (mean, min, max)."""
    per_run = run_table(runs, histories)
    if per_run.empty:
        return per_run
    loss = histories[histories["metric"] == "train/loss"]
    acc = histories[histories["metric"] == "val/accuracy"]
    rows = []
    for (depth, init), sub in per_run.groupby(["depth", "init"]):
        finished = sub[sub["outcome"] == "finished"]["run_id"]
        curve = loss[loss["run_id"].isin(finished)].groupby("epoch")["value"].mean()
        below = curve[curve < CONVERGED * curve.iloc[0]] if len(curve) else curve
        final_acc = acc[acc["run_id"].isin(finished)]
        final_acc = final_acc[final_acc["epoch"] == final_acc["epoch"].max()]["value"]
        rows.append({"depth": depth, "init": init, "runs": len(sub),
                     "converged": int(sub["converged"].sum()),
                     "stalled": int(sub["stalled"].sum()),
                     "diverged": int((sub["outcome"] != "finished").sum()),
                     "median final / init": float(sub["final / init"].median()),
                     "epoch mean loss < half": int(below.index[0]) if len(below) else np.nan,
                     "final val acc": final_acc.mean(), "min": final_acc.min(),
                     "max": final_acc.max()})
    table = pd.DataFrame(rows)
    order = {i: k for k, i in enumerate(_inits(table))}
    return table.sort_values(["depth", "init"], key=lambda s: s.map(order) if s.name == "init"
                             else s).reset_index(drop=True)


def claims(runs: pd.DataFrame, histories: pd.DataFrame) -> list[Claim]:
    table = loss_table(runs, histories)
    out = []

    def row(depth: int, init: str):
        found = table[(table["depth"] == depth) & (table["init"] == init)]
        return None if found.empty else found.iloc[0]

    def said(r) -> str:
        return (f"{r['converged']}/{r['runs']} converged, {r['stalled']} stalled, "
                f"{r['diverged']} diverged, median final/initial loss "
                f"{fmt(r['median final / init'])}")

    deep = int(table["depth"].max()) if not table.empty else None
    shallow = int(table["depth"].min()) if not table.empty else None
    def enough(*rows) -> bool:
        return all(r["runs"] >= MIN_SEEDS for r in rows)

    he, xavier = (row(deep, "he"), row(deep, "xavier_uniform")) if deep else (None, None)
    if he is not None and xavier is not None:
        out.append(Claim(
            f"{deep} layers: He init trains (Fig. 3; rule: over at least {MIN_SEEDS} seeds, "
            f"most He runs converge; a diverged run does not)",
            f"he: {said(he)}",
            bool(he["converged"] > he["runs"] / 2) if enough(he) else None))
        out.append(Claim(
            f"{deep} layers: Xavier init stalls (Fig. 3; rule: over at least {MIN_SEEDS} "
            f"seeds, most Xavier runs stall: final training loss above {STALLED:g} x its "
            f"initial value)",
            f"xavier: {said(xavier)}; final validation accuracy {fmt(xavier['final val acc'])} "
            f"(min {fmt(xavier['min'])}, max {fmt(xavier['max'])})",
            bool(xavier["stalled"] > xavier["runs"] / 2) if enough(xavier) else None))
    else:
        out.append(Claim("30 layers: He init trains, Xavier init stalls (Fig. 3)",
                         "he and xavier_uniform at one depth not both in the data", None))
    if shallow is not None and shallow != deep:
        he, xavier = row(shallow, "he"), row(shallow, "xavier_uniform")
        if he is not None and xavier is not None:
            both = (bool(he["converged"] > he["runs"] / 2
                         and xavier["converged"] > xavier["runs"] / 2)
                    if enough(he, xavier) else None)
            out.append(Claim(
                f"{shallow} layers: both converge (Fig. 2), Xavier more slowly (rule: over at "
                f"least {MIN_SEEDS} seeds, most runs of each converge)",
                f"he: {said(he)}; xavier: {said(xavier)}; first epoch the mean loss is below "
                f"half its initial value: he {fmt(he['epoch mean loss < half'])}, xavier "
                f"{fmt(xavier['epoch mean loss < half'])}", both))
    factors = mean_field.factor_table(histories, runs, by=("depth", "label"))
    for init, expected in (("he", 1.0), ("xavier_uniform", 2**-0.5)):
        sub = factors[factors["init"] == init]
        if sub.empty:
            continue
        measured = ", ".join(f"depth {int(r.depth)}: {r.measured:.3f}" for r in sub.itertuples())
        holds = bool(np.all(np.abs(sub["measured"] / expected - 1) < 0.05))
        out.append(Claim(
            f"At initialization std(δ) changes by sqrt(n Var(W) / 2) a layer: "
            f"{expected:.3f} for {init} (rule: within 5%)",
            f"measured per-layer factor {measured}; mean field "
            f"{', '.join(f'{v:.3f}' for v in sub['mean_field'])}", holds))
    return out


def plot_loss_curves(histories: pd.DataFrame) -> Figure:
    """Training loss (log scale) against epoch, one panel per depth, one colour per init;
    mean over seeds (geometric) with the seeds' min-max band (their Fig. 3)."""
    data = histories[histories["metric"].isin(["train/loss", "val/accuracy"])].copy()
    if data.empty:
        raise ValueError("no train/loss in the data")
    data["init"] = data["init"].astype(str)
    data["metric"] = data["metric"].astype(str)
    depths = sorted(int(d) for d in data["depth"].dropna().unique())
    inits = _inits(data)
    colors = dict(zip(inits, sns.color_palette("colorblind", len(inits))))
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(2, len(depths), figsize=(5.2 * len(depths), 7.2), sharex=True,
                                 sharey="row", squeeze=False, layout="constrained")
        for col, depth in enumerate(depths):
            for row, metric in enumerate(("train/loss", "val/accuracy")):
                ax = axes[row, col]
                if metric == "train/loss":
                    ax.set_yscale("log")
                sub = data[(data["depth"] == depth) & (data["metric"] == metric)]
                sns.lineplot(sub, x="epoch", y="value", hue="init", hue_order=inits,
                             palette=colors, estimator="mean", errorbar=("pi", 100), ax=ax,
                             legend=(row == 0 and col == len(depths) - 1))
                ax.set_title(f"{depth} hidden layers of ReLU: {metric}")
                ax.set_ylabel("training loss (log scale)" if row == 0 else
                              "validation accuracy")
    fig.suptitle("He et al. 2015, Fig. 3: deep ReLU networks with He vs Xavier init\n"
                 "(mean over seeds, band = min-max)")
    return fig


def plot_gradient_at_init(histories: pd.DataFrame, runs: pd.DataFrame) -> Figure:
    """Per-layer std(δ) and gradient norm at initialization, one panel per depth: measured
    (solid, geometric mean over seeds), mean field (dashed) anchored at the top hidden layer."""
    prof = mean_field.profile_table(histories, runs, "delta_std")
    grads = histories[(histories["metric"] == "grad_norm") & (histories["epoch"] == 0)]
    if prof.empty:
        raise ValueError("no delta_std at initialization in the data")
    depths = sorted(int(d) for d in prof["depth"].dropna().unique())
    inits = _inits(prof)
    colors = dict(zip(inits, sns.color_palette("colorblind", len(inits))))
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(2, len(depths), figsize=(5.2 * len(depths), 7.2),
                                 squeeze=False, layout="constrained")
        for col, depth in enumerate(depths):
            ax = axes[0, col]
            ax.set_yscale("log")
            for init in inits:
                sub = prof[(prof["depth"] == depth) & (prof["init"] == init)]
                if sub.empty:
                    continue
                g = sub.groupby("layer")[["measured", "mean_field"]].agg(
                    lambda v: float(np.exp(np.log(v.astype(float)).mean())))
                ax.plot(g.index, g["measured"], "o-", color=colors[init], ms=3,
                        label=f"{init} measured")
                ax.plot(g.index, g["mean_field"], "--", color=colors[init],
                        label=f"{init} mean field")
            ax.set_title(f"{depth} hidden layers: std(δ) at initialization")
            ax.set_xlabel("layer l (1 = input side)")
            ax.set_ylabel("std of back-propagated error δ (log)")
            ax.legend(fontsize="small")
            ax = axes[1, col]
            ax.set_yscale("log")
            sub = grads[grads["depth"] == depth].copy()
            sub["init"] = sub["init"].astype(str)
            sns.lineplot(sub, x="layer", y="value", hue="init", hue_order=inits,
                         palette=colors, estimator="mean", errorbar=("pi", 100), marker="o",
                         ax=ax)
            ax.set_title(f"{depth} hidden layers: ‖∂loss/∂W‖ at initialization")
            ax.set_xlabel("layer l (1 = input side)")
            ax.set_ylabel("gradient norm (log)")
    fig.suptitle("Gradient flow at initialization in deep ReLU networks: He keeps it, "
                 "Xavier loses 1/sqrt(2) a layer")
    return fig


def report(sweep) -> PaperReport:
    runs, histories = sweep.runs, sweep.histories
    table = loss_table(runs, histories)
    factors = mean_field.factor_table(histories, runs, by=("depth", "label"))
    return PaperReport(
        title="He et al. 2015, Delving Deep into Rectifiers: deep ReLU networks, He vs Xavier "
              "init",
        setup=("Claims are checked from the tracked runs. A run \"converges\" when its "
               f"training loss ends below {CONVERGED:g} x its value at initialization and "
               f"\"stalls\" when it ends above {STALLED:g} x. Theirs: 22- and 30-layer ReLU "
               "convolutional networks on ImageNet; ours: fully-connected ReLU networks (see "
               "the runs' params for width, data and optimizer)."),
        claims=claims(runs, histories),
        tables={
            "Training loss by depth and init, over seeds": markdown_table(table)
            if not table.empty else "no data",
            "Per-layer factor of std(δ) at initialization: measured vs mean field":
                markdown_table(factors) if not factors.empty else "no data",
        },
        figures={
            "loss_curves": lambda: plot_loss_curves(histories),
            "gradient_at_init": lambda: plot_gradient_at_init(histories, runs),
        },
    )
