"""Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017, "Deep information propagation": tanh
networks trained for a fixed budget train when their depth is below about 6 xi_c, xi_c the
correlation depth scale of mean-field theory (engine/theory.py, :func:`depth_scale`).

Rules, stated in the report: a run "trains" when its final validation accuracy reaches
:data:`TRAINS` (chance is 1/10); a cell (sigma_w^2, depth) trains when every seed of it does and
fails when none does ("mixed" otherwise: the seeds disagree, the cell is not counted). Theory
predicts a cell trainable when depth < 6 xi_c. The claim holds when, over the decided cells,
prediction and outcome agree in at least :data:`AGREE` of them and the 6 xi_c line beats the
better constant guess ("every cell trains", or "none does") by a one-sided sign test at the 5%
level on the cells where the two guesses differ: the line explains the map better than no line.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from backprop_lab.engine.theory import critical_sigma_w2, depth_scale

from ..summary import markdown_table
from .common import Claim, PaperReport

TRAINS = 0.5  # final validation accuracy of a run that trained (chance: 0.1)
AGREE = 0.8
MULTIPLE = 6.0  # "depth below about 6 xi_c"


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z = 1.96)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _sigma_b2(runs: pd.DataFrame) -> float:
    values = runs["sigma_b2"].dropna().unique() if "sigma_b2" in runs.columns else []
    if len(values) != 1:
        raise ValueError(f"the runs need one sigma_b2; found {list(values)}")
    return float(values[0])


def xi_c_table(sigma_w2s, sigma_b2: float) -> pd.DataFrame:
    """sigma_w^2, phase, xi_c and 6 xi_c of tanh at bias variance ``sigma_b2``."""
    rows = []
    for s2 in sigma_w2s:
        ds = depth_scale("tanh", sigma_w2=float(s2), sigma_b2=sigma_b2)
        rows.append({"sigma_w2": float(s2), "phase": ds.phase, "xi_c": ds.xi_c,
                     "6 xi_c": MULTIPLE * ds.xi_c})
    return pd.DataFrame(rows)


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (sigma_w2, depth): seeds, mean / min / max final validation accuracy, how
    many seeds trained, the cell's outcome (trains, fails, mixed), 6 xi_c and the prediction."""
    runs = runs[runs["activation"] == "tanh"].copy()
    if runs.empty:
        return pd.DataFrame()
    sigma_b2 = _sigma_b2(runs)
    acc = runs["val/accuracy"].astype(float)
    # A diverged run (non-finite loss) has not trained, whatever its last accuracy was.
    runs["trained"] = (acc >= TRAINS) & (runs["outcome"].fillna("finished") == "finished")
    grouped = runs.groupby(["sigma_w2", "depth"], as_index=False).agg(
        seeds=("trained", "size"), trained=("trained", "sum"),
        mean_acc=("val/accuracy", "mean"), min_acc=("val/accuracy", "min"),
        max_acc=("val/accuracy", "max"))
    grouped["outcome"] = np.where(grouped["trained"] == grouped["seeds"], "trains",
                                  np.where(grouped["trained"] == 0, "fails", "mixed"))
    xi = xi_c_table(sorted(grouped["sigma_w2"].unique()), sigma_b2).set_index("sigma_w2")
    grouped["6 xi_c"] = grouped["sigma_w2"].map(xi["6 xi_c"])
    grouped["predicted"] = np.where(grouped["depth"] < grouped["6 xi_c"], "trains", "fails")
    return grouped.sort_values(["sigma_w2", "depth"]).reset_index(drop=True)


def sign_test(wins: int, losses: int) -> float:
    """One-sided p-value of ``wins`` or more successes in ``wins + losses`` fair coin flips."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def claims(cells: pd.DataFrame) -> list[Claim]:
    if cells.empty:
        return [Claim("Networks train when depth < 6 xi_c", "no tanh runs in the data", None)]
    decided = cells[cells["outcome"] != "mixed"]
    n = len(decided)
    right = decided["outcome"] == decided["predicted"]
    agree = int(right.sum())
    low, high = wilson(agree, n)
    majority = "trains" if (decided["outcome"] == "trains").mean() >= 0.5 else "fails"
    base = float((decided["outcome"] == majority).mean()) if n else math.nan
    # Where the line and the constant guess differ, one of them is right.
    differ = decided["predicted"] != majority
    wins, losses = int((differ & right).sum()), int((differ & ~right).sum())
    p = sign_test(wins, losses)
    holds = None if n == 0 else bool(agree / n >= AGREE and p < 0.05)
    wrong_fail = int(((decided["outcome"] == "fails") & (decided["predicted"] == "trains")).sum())
    wrong_train = int(((decided["outcome"] == "trains") & (decided["predicted"] == "fails")).sum())
    seeds = int(cells["seeds"].min())
    out = [Claim(
        f"Networks train when depth < {MULTIPLE:g} xi_c and do not beyond (Schoenholz et al. "
        f"2017, Fig. 5-6; rule: a cell trains when all its seeds reach validation accuracy "
        f"{TRAINS:g}; over the cells whose seeds agree, prediction and outcome agree in at "
        f"least {AGREE:.0%}, and the line beats the constant guess by a sign test, p < 0.05)",
        f"{agree} of {n} decided cells agree ({agree / n:.0%}, 95% interval {low:.0%}-"
        f"{high:.0%}); the constant guess 'every cell {majority.removesuffix('s')}s' "
        f"{base:.0%}; where the two differ the line is right in {wins} cells, wrong in "
        f"{losses} (sign test p = {p:.2g}); {wrong_fail} predicted to train failed, "
        f"{wrong_train} predicted to fail trained; {int((cells['outcome'] == 'mixed').sum())} "
        f"of {len(cells)} cells mixed over their {seeds} seeds", holds)]
    return out


def plot_trainability(cells: pd.DataFrame, sigma_b2: float) -> Figure:
    """Heat map of the mean final validation accuracy over (sigma_w^2, depth), with the
    6 xi_c curve of theory and the critical sigma_w^2 (their Fig. 5)."""
    if cells.empty:
        raise ValueError("no tanh runs in the data")
    table = cells.pivot(index="depth", columns="sigma_w2", values="mean_acc")
    s2, depths = table.columns.to_numpy(float), table.index.to_numpy(float)

    def edges(v: np.ndarray) -> np.ndarray:
        mid = (v[1:] + v[:-1]) / 2
        return np.r_[v[0] - (mid[0] - v[0]), mid, v[-1] + (v[-1] - mid[-1])]

    fig, ax = plt.subplots(figsize=(8.5, 6), layout="constrained")
    mesh = ax.pcolormesh(edges(s2), edges(depths), table.to_numpy(float), cmap="magma",
                         vmin=0.0, vmax=1.0, shading="flat")
    fig.colorbar(mesh, ax=ax, label="final validation accuracy (mean over seeds)")
    fine = np.linspace(s2.min(), s2.max(), 161)
    curve = xi_c_table(fine, sigma_b2)
    ax.plot(curve["sigma_w2"], curve["6 xi_c"], color="cyan", lw=2,
            label=f"{MULTIPLE:g} ξ_c (mean-field theory)")
    crit = critical_sigma_w2("tanh", sigma_b2)
    ax.axvline(crit, color="white", ls="--", lw=1, label=f"critical σ_w² = {crit:.3f}")
    mixed = cells[cells["outcome"] == "mixed"]
    ax.plot(mixed["sigma_w2"], mixed["depth"], "x", color="white", ms=5,
            label="seeds disagree")
    ax.set_ylim(edges(depths)[0], edges(depths)[-1])
    ax.set_xlabel("σ_w²  (Var(W) = σ_w² / fan_in)")
    ax.set_ylabel("depth (hidden layers)")
    ax.set_title(f"Trainability of tanh networks, σ_b² = {sigma_b2:g}: accuracy after a fixed "
                 f"budget, with {MULTIPLE:g} ξ_c")
    fig.legend(loc="outside lower center", ncols=3, fontsize="small", facecolor="0.35",
               labelcolor="white")
    return fig


def report(sweep) -> PaperReport:
    runs = sweep.runs
    cells = cell_table(runs)
    sigma_b2 = _sigma_b2(runs) if not cells.empty else math.nan
    xi = (xi_c_table(sorted(cells["sigma_w2"].unique()), sigma_b2) if not cells.empty
          else pd.DataFrame())
    wide = (cells.pivot(index="depth", columns="sigma_w2", values="mean_acc")
            if not cells.empty else pd.DataFrame())
    if not wide.empty:
        wide.columns = [f"{c:g}" for c in wide.columns]
        wide = wide.reset_index()
    return PaperReport(
        title="Schoenholz et al. 2017, Deep information propagation: trainable depth and 6 xi_c",
        setup=(f"tanh networks with sigma_b^2 = {sigma_b2:g} over a grid of sigma_w^2 x depth, "
               "trained for a fixed budget (see the runs' params for width, data, optimizer "
               f"and epochs). A run trains when its final validation accuracy reaches "
               f"{TRAINS:g}; xi_c is the correlation depth scale of mean-field theory "
               "(infinite at the critical sigma_w^2). Theirs: width 300, depths up to 300, MNIST "
               "and CIFAR-10, SGD for a fixed number of steps."),
        claims=claims(cells),
        tables={
            "xi_c of each sigma_w^2": markdown_table(xi, floatfmt=".3g") if not xi.empty
            else "no data",
            "Final validation accuracy (mean over seeds): depth x sigma_w^2":
                markdown_table(wide, floatfmt=".2f") if not wide.empty else "no data",
            "Cells: outcome and prediction": markdown_table(cells, floatfmt=".3g")
            if not cells.empty else "no data",
        },
        figures={"trainability": lambda: plot_trainability(cells, sigma_b2)},
    )
