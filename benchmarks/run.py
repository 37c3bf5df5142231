"""Run backprop-lab's benchmarks and print (and save) a table of side-by-side ratios.

    python benchmarks/run.py                  # everything (~10 min); writes benchmarks/RESULTS.md
    python benchmarks/run.py --only torch     # one benchmark (repeatable); prints only
    python benchmarks/run.py --quick          # tiny sizes: checks that each benchmark runs
    make bench                                # the same as the first line

Benchmarks (module benchmarks/bench_<name>.py):
    torch        our trainer against PyTorch CPU, time per epoch (needs the torch extra)
    diagnostics  per-layer diagnostics on against off
    tracking     untracked, tracked by our harness, tracked naively (one log_metric per value)
    flops        achieved GFLOP/s of a wide network against np.matmul on the same shapes
    multirun     six Hydra jobs: basic launcher against joblib with two workers
    memory       peak resident memory against parameters + cached activations
    cures        residual, layer/batch norm, clipping: cost per epoch vs plain and vs torch
    floor        the operations no numpy engine can avoid, numpy against torch (benchmark 1's
                 floor), and how close our trainer is to it
    study        a 36-run study's efficiency (training time / wall time), basic and joblib,
                 and each job's fixed cost (start-up, set-up, outputs)
    scaling      time per epoch against width and depth, ours and torch; writes
                 docs/performance.md and its figure

BLAS threads are pinned for the whole run (``--threads``, default 1: on a 2-core machine two
OpenBLAS threads next to another busy process are several times slower: a 10 x 64 tanh network
on 2000 samples took 27 ms an epoch with one thread, 198 ms with two);
subprocesses get the same limit through OMP/OPENBLAS/MKL_NUM_THREADS and ``threads=``.
A full run (all benchmarks, no ``--quick``) writes benchmarks/RESULTS.md unless ``--output``
says otherwise; partial or quick runs only print unless ``--output`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "src", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchmarks.common import (  # noqa: E402
    INFO,
    MISS,
    PASS,
    SKIP,
    Stopwatch,
    Table,
    fmt_ratio,
    load_average,
    machine_info,
)

BENCHMARKS = ("torch", "diagnostics", "tracking", "flops", "multirun", "memory", "cures",
              "floor", "study", "scaling")
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
# Tables whose informative rows belong in the summary: the floor proof of benchmark 1's rows.
SUMMARY_INFO = {"floor"}


def run_benchmark(name: str, quick: bool, threads: int) -> Table:
    module = importlib.import_module(f"benchmarks.bench_{name}")
    watch = Stopwatch()
    load_before = load_average()
    try:
        table = module.run(quick=quick, threads=threads)
    except Exception as exc:  # one broken benchmark must not hide the others' results
        traceback.print_exc()
        table = Table(key=name, title=f"{name} (failed)", what="", ratio_label="ratio",
                      skipped=f"failed with {type(exc).__name__}: {exc}")
    table.seconds = watch.seconds
    table.notes.append(f"Load average (1, 5, 15 min) of the machine before: {load_before}; "
                       f"after: {load_average()}.")
    return table


def summary(tables: list[Table]) -> str:
    lines = ["| benchmark | case | ratio | goal | status |", "|---|---|---:|---|---|"]
    for table in tables:
        if table.skipped and not table.rows:
            lines.append(f"| {table.title} | | | | {SKIP}: {table.skipped} |")
        for row in table.rows:
            if row.goal is None and row.ok and table.key not in SUMMARY_INFO:
                continue
            status = f"**{row.status}**" if row.status == MISS else row.status
            lines.append(f"| {table.title} | {row.case} | {fmt_ratio(row.ratio)} "
                         f"({row.label or table.ratio_label}) | {row.goal or ''} | {status} |")
    return "\n".join(lines)


def render(info: dict[str, str], tables: list[Table], command: str, seconds: float) -> str:
    rows = [row for t in tables for row in t.rows]
    counts = {s: sum(r.status == s for r in rows) for s in (PASS, MISS, INFO)}
    parts = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {info['date']} in {seconds / 60:.1f} min "
        "(`make bench` regenerates this file). Timings come from a shared machine: every ratio "
        "compares variants measured side by side in this one run, interleaved, as medians of "
        "repeats; absolute times are only indicative.",
        "",
        f"Goals: {counts[PASS]} met, {counts[MISS]} missed ({counts[INFO]} informative rows).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "## Summary",
        "",
        summary(tables),
        "",
    ]
    for table in tables:
        parts += [table.to_markdown(), ""]
    return "\n".join(parts).rstrip() + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run backprop-lab's benchmarks (see the module docstring).")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repeat: checks that each benchmark runs")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/OpenMP/torch threads for every variant (default 1)")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the markdown report here (default: benchmarks/RESULTS.md "
                             "for a full run of every benchmark, nothing otherwise)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    return parser.parse_args(argv)


def pin_threads(threads: int) -> None:
    """Pin BLAS/OpenMP threads: environment variables for libraries loaded later (and
    subprocesses), threadpoolctl (in main) for the ones already loaded."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_threads(args.threads)
    import numpy  # noqa: F401  (loaded before threadpool_limits, so the limit reaches it)
    from threadpoolctl import threadpool_limits

    names = [n for n in BENCHMARKS if args.only is None or n in args.only]
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    command += "".join(f" --only {n}" for n in args.only or ())
    if args.threads != 1:
        command += f" --threads {args.threads}"
    watch = Stopwatch()
    tables: list[Table] = []
    with threadpool_limits(limits=args.threads):
        info = machine_info(args.threads)
        print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
        for name in names:
            print(f"\n== {name} ...", flush=True)
            table = run_benchmark(name, args.quick, args.threads)
            tables.append(table)
            print(table.to_markdown(), flush=True)
    info["load average at end"] = load_average()
    report = render(info, tables, command, watch.seconds)
    print("\n## Summary\n\n" + summary(tables), flush=True)

    output = args.output
    if output is None and not args.quick and args.only is None:
        output = RESULTS
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
        print(f"\nwrote {output}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(
            {"machine": info, "tables": [t.to_json() for t in tables]}, indent=1, default=str))
    failed = [t.key for t in tables if t.skipped and t.skipped.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
