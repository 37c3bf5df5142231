"""What a paper's report is made of: claims checked against the data, figures, tables, and the
markdown that states each claim, our measurement and whether it holds."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..summary import markdown_table


@dataclass
class Claim:
    """One statement of a paper, what we measured for it, and whether it holds (None: the data
    cannot tell, e.g. the configuration was not run, or a difference within its error)."""

    claim: str
    measurement: str
    holds: bool | None

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "no", None: "undecided"}[self.holds]


@dataclass
class PaperReport:
    """A paper's report: title, setup sentence, claims, tables (title -> markdown) and figure
    makers (file name -> function returning a Figure)."""

    title: str
    setup: str
    claims: list[Claim]
    tables: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Callable[[], Figure]] = field(default_factory=dict)


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and its standard error sqrt(var(a)/n_a + var(b)/n_b) (Welch); the
    error is NaN with fewer than two values on a side."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return float(np.mean(a) - np.mean(b)) if a.size and b.size else math.nan, math.nan
    return (float(a.mean() - b.mean()),
            math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))


def decide(diff: float, se: float, k: float = 2.0) -> bool | None:
    """True when diff > k se, False when diff < -k se, None (undecided) in between or when the
    error is unknown."""
    if not (math.isfinite(diff) and math.isfinite(se)):
        return None
    return True if diff > k * se else False if diff < -k * se else None


def spearman_p(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rank correlation of x and y (average ranks for ties) and its exact one-sided
    p-value (a correlation at least as large) over every permutation of y: for n = 5, 120."""
    rx = _ranks(np.asarray(x, dtype=float))
    ry = _ranks(np.asarray(y, dtype=float))
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:  # all tied: no ordering to correlate
        return math.nan, 1.0
    rho = float(np.corrcoef(rx, ry)[0, 1])
    perms = [float(np.corrcoef(rx, ry[list(p)])[0, 1])
             for p in itertools.permutations(range(len(ry)))]
    return rho, float(np.mean(np.array(perms) >= rho - 1e-12))


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(v.size)
    ranks[order] = np.arange(1, v.size + 1)
    for value in np.unique(v):  # ties: their average rank
        ranks[v == value] = ranks[v == value].mean()
    return ranks


def draw(makers: dict[str, Callable[[], Figure]]) -> dict[str, Figure]:
    """Every figure the data allow; one that fails is left out with a warning naming it."""
    drawn = {}
    for name, make in makers.items():
        try:
            drawn[name] = make()
        except (ValueError, KeyError, IndexError) as error:
            warnings.warn(f"figure {name} left out: {error}", stacklevel=2)
    return drawn


def claims_table(claims: list[Claim]) -> str:
    frame = pd.DataFrame({"claim": [c.claim for c in claims],
                          "measurement": [c.measurement for c in claims],
                          "holds?": [c.verdict for c in claims]})
    return markdown_table(frame)


def paper_markdown(report: PaperReport, sweep, figures: dict[str, str]) -> str:
    """summary.md: where the data came from, the claims table, the tables and the figures."""
    runs = sweep.runs
    out = [f"# {report.title}", "", report.setup, ""]
    out.append(f"- store: `{sweep.uri}`")
    if sweep.sweep_id:
        out.append(f"- sweep: `{sweep.sweep_name}` (run id `{sweep.sweep_id}`)")
    statuses = ", ".join(f"{k} {v}" for k, v in runs["status"].value_counts().items())
    out.append(f"- runs: {len(runs)} ({statuses})")
    seconds = runs["seconds"].dropna()
    if not seconds.empty:
        out.append(f"- training time: {seconds.sum():.0f} s in all (runs' own start to end)")
    out += ["", "## Claims", "", claims_table(report.claims)]
    for title, table in report.tables.items():
        out += ["", f"## {title}", "", table]
    if figures:
        out += ["", "## Figures", ""]
        out += [f"### {name}\n\n![{name}]({path})\n" for name, path in figures.items()]
    return "\n".join(out) + "\n"


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}g}"
