"""Render a sweep's figures and a markdown summary, without Jupyter: the vanishing-gradient
study's, or a paper's (``--paper``: its figures and a summary.md stating each claim, our
measurement and whether it holds).

    python -m backprop_lab.analysis.report --out reports/latest     # latest sweep, default store
    python -m backprop_lab.report --paper glorot_bengio             # the same module, shorter
    python -m backprop_lab.report --paper he_init_depth --out reports/he
    python -m backprop_lab.analysis.report --uri sqlite:///mlflow.db --sweep RUN_ID --out reports/x
    python -m backprop_lab.analysis.report --sweep RUN_A --sweep RUN_B --out reports/a_vs_b
    python -m backprop_lab.analysis.report --experiment backprop-lab --all-runs --out reports/all

Writes ``<out>/summary.md``, ``<out>/gradient_flow.html`` (analysis/gradient_flow.py) and one
PNG per figure of :mod:`backprop_lab.analysis.figures` (or
of the paper, :mod:`backprop_lab.analysis.papers`), then
logs the folder as artifacts of the sweep's parent run under ``report/`` (skipped with
``--no-log``, or when the selection is a whole experiment and there is no parent run).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from backprop_lab.analysis.papers import PAPERS

REPORT_ARTIFACT_PATH = "report"


def latest_sweep_named(uri: str | None, experiment: str | None, name: str) -> str:
    """Run id of the newest sweep whose run name contains ``name`` (a sweep's parent run is
    named after its experiment); a ValueError when there is none."""
    from backprop_lab.analysis.loading import list_sweeps

    sweeps = list_sweeps(uri, experiment)
    found = sweeps[sweeps["name"].astype(str).str.contains(name, regex=False)]
    if found.empty:
        raise ValueError(f"no sweep named like {name!r} in the store; run "
                         f"`python train.py -m experiment={name}` first or pass --sweep RUN_ID")
    return str(found["run_id"].iloc[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backprop_lab.report",
        description="Figures (PNG) and a markdown summary of a sweep's vanishing-gradient "
        "behaviour, logged back to the sweep's parent run under report/.",
    )
    parser.add_argument("--uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<repo root>/mlflow.db)")
    parser.add_argument("--experiment", default=None,
                        help="experiment name (default: look for sweeps in every experiment)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--sweep", action="append", default=None,
                       help="parent run id of the sweep (default: the latest sweep); repeat "
                       "it to compare several sweeps in one report (a warning names the "
                       "settings they differ in besides the swept ones)")
    group.add_argument("--all-runs", action="store_true",
                       help="use every job run of the experiment instead of one sweep")
    parser.add_argument("--paper", choices=PAPERS, default=None,
                        help="a paper's figures and claims instead of the vanishing-gradient "
                        "study's; the default sweep is then the latest sweep of that "
                        "experiment (its name in the sweep's run name)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder to write into (default: reports/<paper> with --paper)")
    parser.add_argument("--dpi", type=int, default=120)
    parser.add_argument("--no-log", action="store_true",
                        help="do not attach the report to the sweep's parent run")
    return parser.parse_args(argv)


def write_report(sweep, out: Path, dpi: int = 120) -> list[Path]:
    """Save every figure as ``<out>/<name>.png`` and the summary as ``<out>/summary.md``;
    return the files written."""
    from backprop_lab.analysis.figures import all_figures, save_figures
    from backprop_lab.analysis.summary import summary_markdown

    written, links = save_figures(all_figures(sweep.runs, sweep.histories), out, dpi)
    summary = out / "summary.md"
    summary.write_text(summary_markdown(sweep, links), encoding="utf-8")
    written.append(summary)
    from backprop_lab.analysis.gradient_flow import write_sweep_page

    written.append(write_sweep_page(sweep, out))  # gradient_flow.html, the interactive page
    return written


def sweep_report(uri: str, parent_id: str, out: Path) -> list[str]:
    """The report of a sweep that just ended, logged to its parent under report/; returns
    markdown lines for the parent's description (harness/sweep_summary.py).

    For an Optuna search (best_trials.csv beside ``out``): the figures of the best trial of
    each study, and the comparison with the fixed-rate study (analysis/tuned.py)."""
    import matplotlib

    matplotlib.use("Agg")
    from mlflow import MlflowClient

    from backprop_lab.analysis import tuned
    from backprop_lab.analysis.loading import load_sweep

    best_path = out.parent / tuned.BEST_TRIALS
    extra: list[str] = []
    if best_path.exists():
        sweep = tuned.load_tuned(uri, parent_id, tuned.read_best(best_path))
        fixed = tuned.fixed_rate_study(uri, sweep.experiment_ids)
        table = tuned.comparison(sweep.runs, fixed[1] if fixed else None)
        out.mkdir(parents=True, exist_ok=True)
        text = tuned.comparison_markdown(table, fixed[0] if fixed else None)
        (out / "comparison.md").write_text(text, encoding="utf-8")
        table.to_csv(out / "comparison.csv", index=False)
        fig = tuned.comparison_figure(table)
        fig.savefig(out / "comparison.png", dpi=110)
        extra = ["", "**Tuned vs fixed learning rate**", "", text]
    else:
        sweep = load_sweep(uri, None, parent_id)
    files = write_report(sweep, out, dpi=100)
    client = MlflowClient(tracking_uri=uri)
    client.log_artifacts(parent_id, str(out), artifact_path=REPORT_ARTIFACT_PATH)
    pngs = sorted(p.name for p in out.glob("*.png"))
    extra += ["", f"Report ({len(files)} files): `{REPORT_ARTIFACT_PATH}/` in this run's "
              "artifacts: " + ", ".join(f"`{name}`" for name in pngs)]
    return extra


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out is None:
        if args.paper is None:
            print("error: --out is required (or --paper, which defaults it)", file=sys.stderr)
            return 2
        args.out = Path("reports") / args.paper
    import matplotlib

    matplotlib.use("Agg")  # files only, before pyplot is imported
    from mlflow import MlflowClient

    from backprop_lab.analysis.loading import SettingsDiffer, load_sweep

    try:
        which = (None if args.all_runs else "latest" if not args.sweep
                 else args.sweep[0] if len(args.sweep) == 1 else args.sweep)
        if args.paper is not None and which == "latest":
            which = latest_sweep_named(args.uri, args.experiment, args.paper)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SettingsDiffer)
            sweep = load_sweep(args.uri, args.experiment, which)
        for warning in caught:  # the settings the runs differ in, said plainly
            if issubclass(warning.category, SettingsDiffer):
                print(f"warning: {warning.message}", file=sys.stderr)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if sweep.runs.empty:
        print(f"error: no runs found in {sweep.uri}", file=sys.stderr)
        return 2
    print(f"{sweep}: loaded in {sum(sweep.load_seconds.values()):.1f} s")
    if args.paper is not None:
        from backprop_lab.analysis.papers import write_paper_report

        files = write_paper_report(args.paper, sweep, args.out, dpi=args.dpi)
    else:
        files = write_report(sweep, args.out, dpi=args.dpi)
    for path in files:
        print(f"wrote {path}")
    if args.no_log:
        return 0
    if sweep.sweep_id is None:
        print("no sweep parent run (whole experiment selected): report not logged to MLflow")
        return 0
    client = MlflowClient(tracking_uri=sweep.uri)
    for parent in sweep.sweep_ids or [sweep.sweep_id]:  # several sweeps: each gets it
        for path in files:
            client.log_artifact(parent, str(path), artifact_path=REPORT_ARTIFACT_PATH)
        print(f"logged {len(files)} files to run {parent} under {REPORT_ARTIFACT_PATH}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
