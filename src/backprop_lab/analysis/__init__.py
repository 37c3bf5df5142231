"""Analysis of tracked runs: load an MLflow store into pandas, draw the study's figures, and
write the numbers and conclusions behind them.

    from backprop_lab.analysis import load_sweep, figures, summary
    sweep = load_sweep()                      # latest sweep of the default store
    figures.plot_vanishing_profile(sweep.histories)
    print("\\n".join(summary.conclusions(sweep.runs, sweep.histories)))

The notebooks in analysis/ and ``python -m backprop_lab.analysis.report`` call only these functions.
"""

from . import figures, summary
from .loading import (
    SweepData,
    default_tracking_uri,
    list_sweeps,
    load_histories,
    load_sweep,
    runs_table,
    select_runs,
)

__all__ = [
    "SweepData",
    "default_tracking_uri",
    "figures",
    "list_sweeps",
    "load_histories",
    "load_sweep",
    "runs_table",
    "select_runs",
    "summary",
]
