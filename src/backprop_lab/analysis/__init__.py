"""Analysis of tracked runs: load an MLflow store into pandas, draw the study's figures, and
write the numbers and conclusions behind them.

    from backprop_lab.analysis import load_sweep, figures, summary
    sweep = load_sweep()                      # latest sweep of the default store
    figures.plot_vanishing_profile(sweep.histories)
    print("\\n".join(summary.conclusions(sweep.runs, sweep.histories)))

The notebooks in analysis/ and ``python -m backprop_lab.analysis.report`` call only these functions.
"""

# Loaded on first use (PEP 562): a job that only builds its gradient-flow record
# (analysis/flow_records.py) must not pay for pandas, seaborn and MLflow.
_FROM_LOADING = ("SweepData", "default_tracking_uri", "list_sweeps", "load_histories",
                 "load_sweep", "runs_table", "select_runs")

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


def __getattr__(name: str):
    import importlib

    if name in ("figures", "summary"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in _FROM_LOADING:
        return getattr(importlib.import_module(f"{__name__}.loading"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
