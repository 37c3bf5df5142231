"""Dynamical isometry (Saxe, McClelland & Ganguli 2014; Pennington, Schoenholz & Ganguli 2017):
deep tanh networks at the critical point, orthogonal against Gaussian weights.

The Jacobian's spread is ``jacobian/spread`` (max / median singular value of the input-output
Jacobian, median over the probe inputs; engine/jacobian.py), read from each run's metrics.
Rules, stated in the report, on log10 of the spread at initialization and on log10 of the
training loss at epoch :data:`EARLY_EPOCH`, over seeds (mean, standard error):

- orthogonal stays concentrated: at every depth its spread is below :data:`NEAR` and from the
  shallowest to the deepest depth its mean log spread grows by less than log10(2) plus two
  standard errors of the difference;
- Gaussian widens with depth: from each depth to the next its mean log spread grows by more than
  two standard errors of the difference;
- orthogonal trains faster: at the deepest depth its mean log loss at epoch EARLY_EPOCH is below
  Gaussian's by more than two standard errors (Welch), and at no depth above it by more than two.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..summary import markdown_table
from .common import Claim, PaperReport

NEAR = 10.0  # a spread (max / median singular value) "near 1": within an order of magnitude
EARLY_EPOCH = 5
JACOBIAN_METRICS = ("jacobian/spread", "jacobian/mean_sq_sv", "jacobian/max_sv",
                    "jacobian/theory_mean_sq_sv")
INITS = ("orthogonal", "gaussian")


def jacobian_metrics(uri: str, runs: pd.DataFrame) -> pd.DataFrame:
    """The jacobian/* metrics of every run, long: run_id, depth, init, seed, metric, epoch,
    value (the store's metric API: a few values a run)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    rows = []
    for r in runs.itertuples():
        for metric in JACOBIAN_METRICS:
            for m in client.get_metric_history(r.run_id, metric):
                rows.append({"run_id": r.run_id, "depth": int(r.depth), "init": str(r.init),
                             "seed": int(r.seed), "metric": metric, "epoch": int(m.step),
                             "value": float(m.value)})
    return pd.DataFrame(rows, columns=["run_id", "depth", "init", "seed", "metric", "epoch",
                                       "value"])


def _stats(values: pd.Series) -> tuple[float, float, int]:
    v = values.dropna().astype(float)
    n = len(v)
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(v.mean()) if n else math.nan, se, n


def spread_table(jac: pd.DataFrame) -> pd.DataFrame:
    """Per depth and init at initialization: runs, mean and SE of log10 spread, min and max
    spread, mean ||J||_F^2 / n and theory's prod chi."""
    init = jac[jac["epoch"] == 0]
    rows = []
    for (depth, name), sub in init.groupby(["depth", "init"]):
        spread = sub[sub["metric"] == "jacobian/spread"]["value"]
        mean, se, n = _stats(np.log10(spread))
        rows.append({"depth": depth, "init": name, "runs": n, "log10 spread": mean,
                     "SE": se, "min spread": spread.min(), "max spread": spread.max(),
                     "mean sq sv": sub[sub["metric"] == "jacobian/mean_sq_sv"]["value"].mean(),
                     "theory mean sq sv":
                         sub[sub["metric"] == "jacobian/theory_mean_sq_sv"]["value"].mean()})
    return pd.DataFrame(rows)


def loss_table(histories: pd.DataFrame) -> pd.DataFrame:
    """Per depth and init: runs, mean and SE of log10 training loss at EARLY_EPOCH and at the
    last epoch, and the mean final validation accuracy."""
    loss = histories[histories["metric"] == "train/loss"]
    acc = histories[histories["metric"] == "val/accuracy"]
    last = int(loss["epoch"].max()) if not loss.empty else 0
    rows = []
    for (depth, name), sub in loss.groupby(["depth", "init"], observed=True):
        early = sub[sub["epoch"] == EARLY_EPOCH]["value"]
        final = sub[sub["epoch"] == last]["value"]
        m_early, se_early, n = _stats(np.log10(early))
        m_final, se_final, _ = _stats(np.log10(final))
        a = acc[(acc["depth"] == depth) & (acc["init"] == name) & (acc["epoch"] == last)]
        rows.append({"depth": int(depth), "init": str(name), "runs": n,
                     f"log10 loss @{EARLY_EPOCH}": m_early, f"SE @{EARLY_EPOCH}": se_early,
                     f"log10 loss @{last}": m_final, f"SE @{last}": se_final,
                     "final val acc": a["value"].mean()})
    return pd.DataFrame(rows)


def _row(table: pd.DataFrame, depth: int, init: str):
    found = table[(table["depth"] == depth) & (table["init"] == init)]
    return None if found.empty else found.iloc[0]


def claims(spreads: pd.DataFrame, losses: pd.DataFrame) -> list[Claim]:
    out = []
    depths = sorted(int(d) for d in spreads["depth"].unique()) if not spreads.empty else []
    if len(depths) < 2:
        return [Claim("Orthogonal stays isometric, Gaussian spreads with depth",
                      "needs jacobian/spread at two depths or more", None)]
    lo, hi = depths[0], depths[-1]
    orth = spreads[spreads["init"] == "orthogonal"]
    o_lo, o_hi = _row(spreads, lo, "orthogonal"), _row(spreads, hi, "orthogonal")
    if o_lo is not None and o_hi is not None:
        growth = o_hi["log10 spread"] - o_lo["log10 spread"]
        se = math.hypot(o_lo["SE"], o_hi["SE"])
        holds = bool(orth["max spread"].max() < NEAR and growth < math.log10(2) + 2 * se)
        out.append(Claim(
            f"Orthogonal weights at criticality keep the Jacobian's singular values "
            f"concentrated at any depth (rule: every run's max/median below {NEAR:g}, and "
            f"depth {lo} -> {hi} grows the mean log10 spread by less than log10 2 + 2 SE)",
            "spread (max/median) at init: " + "; ".join(
                f"depth {int(r['depth'])}: {10 ** r['log10 spread']:.2f} (runs "
                f"{r['min spread']:.2f}-{r['max spread']:.2f})" for _, r in orth.iterrows())
            + f"; growth {growth:+.3f} ± {se:.3f} (log10)",
            holds))
    gauss = spreads[spreads["init"] == "gaussian"].sort_values("depth")
    if len(gauss) >= 2:
        steps = []
        ok = True
        rows = [r for _, r in gauss.iterrows()]
        for a, b in zip(rows, rows[1:]):
            diff = b["log10 spread"] - a["log10 spread"]
            se = math.hypot(a["SE"], b["SE"])
            ok &= bool(diff > 2 * se)
            steps.append(f"{int(a['depth'])}->{int(b['depth'])}: {diff:+.2f} ± {se:.2f}")
        out.append(Claim(
            "Gaussian weights at criticality: the spread widens with depth (rule: the mean "
            "log10 spread grows from each depth to the next by more than 2 SE)",
            "spread at init: " + "; ".join(f"depth {int(r['depth'])}: 10^{r['log10 spread']:.1f}"
                                           for r in rows)
            + "; log10 growth " + "; ".join(steps), ok))
    col, se_col = f"log10 loss @{EARLY_EPOCH}", f"SE @{EARLY_EPOCH}"
    if not losses.empty:
        parts, reversed_somewhere = [], False
        deep_ok = None
        both = [d for d in sorted(losses["depth"].unique())
                if _row(losses, d, "orthogonal") is not None
                and _row(losses, d, "gaussian") is not None]
        for depth in both:
            o, g = _row(losses, depth, "orthogonal"), _row(losses, depth, "gaussian")
            diff, se = g[col] - o[col], math.hypot(o[se_col], g[se_col])
            parts.append(f"depth {depth}: orthogonal {10 ** o[col]:.3g}, gaussian "
                         f"{10 ** g[col]:.3g} (log10 difference {diff:+.2f} ± {se:.2f})")
            reversed_somewhere |= bool(diff < -2 * se)
            if depth == both[-1]:
                deep_ok = bool(diff > 2 * se)
        holds = None if deep_ok is None else bool(deep_ok and not reversed_somewhere)
        out.append(Claim(
            f"Orthogonal networks train faster (rule: training loss at epoch {EARLY_EPOCH}, "
            f"log10, mean over seeds: Gaussian's exceeds orthogonal's by more than 2 SE at the "
            f"deepest depth, and the reverse nowhere)",
            "training loss at epoch " + f"{EARLY_EPOCH} (geometric mean): " + "; ".join(parts),
            holds))
    return out


def plot_spectra(jac: pd.DataFrame, histories: pd.DataFrame) -> Figure:
    """Left: the spread at initialization against depth (log), one point per run; middle: the
    spread over training; right: the training loss (log) over epochs, mean over seeds."""
    if jac.empty:
        raise ValueError("no jacobian/* metrics in the runs")
    colors = dict(zip(INITS, sns.color_palette("colorblind", 2)))
    spread = jac[jac["metric"] == "jacobian/spread"]
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained")
        ax = axes[0]
        at_init = spread[spread["epoch"] == 0]
        for name in INITS:
            sub = at_init[at_init["init"] == name]
            ax.plot(sub["depth"], sub["value"], "o", color=colors[name], alpha=0.6, label=name)
            means = sub.groupby("depth")["value"].agg(lambda v: 10 ** np.log10(v).mean())
            ax.plot(means.index, means.values, "-", color=colors[name])
        ax.set_yscale("log")
        ax.set_xlabel("depth (hidden layers)")
        ax.set_ylabel("max / median singular value of J")
        ax.set_title("Jacobian spread at initialization")
        ax.legend()
        ax = axes[1]
        sub = spread.copy()
        sub["run"] = sub["init"] + ", depth " + sub["depth"].astype(str)
        sns.lineplot(sub, x="epoch", y="value", hue="init", style="depth", palette=colors,
                     estimator=lambda v: 10 ** np.log10(v).mean(), errorbar=None, ax=ax,
                     marker="o")
        ax.set_yscale("log")
        ax.set_ylabel("spread (geometric mean over seeds)")
        ax.legend(fontsize="small", loc="center right", ncols=2)
        ax.set_title("Jacobian spread during training")
        ax = axes[2]
        loss = histories[histories["metric"] == "train/loss"].copy()
        loss["init"] = loss["init"].astype(str)
        sns.lineplot(loss, x="epoch", y="value", hue="init", style="depth", palette=colors,
                     estimator="mean", errorbar=None, ax=ax)
        ax.set_yscale("log")
        ax.set_ylabel("training loss (mean over seeds, log)")
        ax.set_title("Training loss")
    fig.suptitle("Dynamical isometry: tanh at criticality, orthogonal vs Gaussian weights")
    return fig


def report(sweep) -> PaperReport:
    runs, histories = sweep.runs, sweep.histories
    jac = jacobian_metrics(sweep.uri, runs)
    spreads = spread_table(jac) if not jac.empty else pd.DataFrame()
    losses = loss_table(histories)
    s2 = sorted(runs["sigma_w2"].dropna().unique()) if "sigma_w2" in runs.columns else []
    b2 = sorted(runs["sigma_b2"].dropna().unique()) if "sigma_b2" in runs.columns else []
    return PaperReport(
        title="Dynamical isometry (Saxe et al. 2014; Pennington et al. 2017): orthogonal vs "
              "Gaussian weights in deep tanh networks at criticality",
        setup=(f"tanh networks with sigma_w^2 = {', '.join(f'{v:g}' for v in s2)} and "
               f"sigma_b^2 = {', '.join(f'{v:g}' for v in b2)} (the critical point), "
               "orthogonal or Gaussian weights of the same variance. The spread is max / "
               "median singular value of the input-output Jacobian (input to the last hidden "
               "layer), median over the probe inputs; 1 is isometry. Theirs: widths of 400-"
               "1000, depths up to 200, CIFAR-10."),
        claims=claims(spreads, losses),
        tables={
            "Jacobian at initialization, over seeds": markdown_table(spreads, floatfmt=".3g")
            if not spreads.empty else "no data",
            "Training loss, over seeds": markdown_table(losses, floatfmt=".3g")
            if not losses.empty else "no data",
        },
        figures={"spectra": lambda: plot_spectra(jac, histories)},
    )
