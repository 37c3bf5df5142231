"""What checking a SQLite store for damaged pages costs when a command opens it.

    python benchmarks/store_check.py                 # a 1 GB store in a temporary folder
    python benchmarks/store_check.py --gb 0.2 --repeats 3

Builds an MLflow store of at least ``--gb`` GB (metrics rows of one run, as a long sweep
leaves them), then times, interleaved and repeated, what opening it for a command costs:

- ``open``: the schema check alone;
- ``open-time check``: what a command runs on a store larger than ``FULL_CHECK_BYTES``
  (quick_check of every table but ``metrics``);
- ``quick_check``: what it runs on a smaller one (every page read, no index comparison);
- ``integrity_check``: quick_check plus every index compared with its table;

each with the file in the page cache (warm) and evicted from it (cold: ``posix_fadvise
(DONTNEED)`` on this file only). Prints a table of medians; ``--output`` writes it as
markdown too. The machine is shared: figures vary with its load.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from backprop_lab.tracking.sqlite_store import (  # noqa: E402
    BIG_TABLES,
    create_store,
    quick_check,
)

ROWS_PER_BATCH = 1_000_000


def build(path: Path, gigabytes: float) -> int:
    """An MLflow store of at least ``gigabytes``; returns its number of metric rows."""
    create_store(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    run = "0" * 32
    con.execute("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name,"
                " user_id, status, start_time, lifecycle_stage, artifact_uri, experiment_id)"
                " VALUES (?, 'big', 'LOCAL', '', '', '', 'FINISHED', 0, 'active', '', 0)",
                (run,))
    rows = 0
    while path.stat().st_size < gigabytes * 1e9:
        con.execute("BEGIN")
        con.execute(
            "WITH RECURSIVE i(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM i WHERE n < ?)"
            " INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)"
            " SELECT 'grad_norm/layer_' || printf('%02d', n % 37), (n % 9973) * 1e-3,"
            " 1700000000000 + n, ?, n / 37, 0 FROM i",
            (rows, rows + ROWS_PER_BATCH - 1, run))
        con.execute("COMMIT")
        rows += ROWS_PER_BATCH
    con.close()
    return rows


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def time_open(path: Path, pragma: str | None, cold: bool) -> float:
    if cold:
        evict(path)
    else:
        path.read_bytes()  # into the page cache
    tic = time.perf_counter()
    con = sqlite3.connect(path)
    con.execute("SELECT version_num FROM alembic_version").fetchone()
    if pragma == "open-time":  # what a command runs on a store above FULL_CHECK_BYTES
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type = "
                                            "'table' AND name NOT LIKE 'sqlite_%'")
                  if r[0] not in BIG_TABLES]
        assert quick_check(con, tables) == ["ok"]
    elif pragma:
        assert [r[0] for r in con.execute(f"PRAGMA {pragma}")] == ["ok"]
    con.close()
    return time.perf_counter() - tic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to build the store (default: /tmp)")
    parser.add_argument("--output", default=None, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "mlflow.db"
        tic = time.perf_counter()
        rows = build(path, args.gb)
        size = path.stat().st_size
        print(f"built {size / 1e9:.2f} GB ({rows:,} metric rows) in "
              f"{time.perf_counter() - tic:.0f} s", flush=True)
        variants = [(name, pragma, cold) for cold in (False, True)
                    for name, pragma in (("open", None), ("open-time check", "open-time"),
                                         ("quick_check", "quick_check(5)"),
                                         ("integrity_check", "integrity_check(5)"))]
        times: dict[tuple[str, bool], list[float]] = {(n, c): [] for n, _, c in variants}
        for repeat in range(args.repeats):
            order = variants if repeat % 2 == 0 else variants[::-1]
            for name, pragma, cold in order:
                times[(name, cold)].append(time_open(path, pragma, cold))
        lines = [f"Store: {size / 1e9:.2f} GB, {rows:,} metric rows; medians of "
                 f"{args.repeats} interleaved repeats; shared 2-core machine (load "
                 f"{os.getloadavg()[0]:.1f}).", "",
                 "| opening the store | page cache warm (s) | cold (s) |", "|---|---|---|"]
        for name in ("open", "open-time check", "quick_check", "integrity_check"):
            warm = statistics.median(times[(name, False)])
            cold = statistics.median(times[(name, True)])
            lines.append(f"| {name} | {warm:.3f} | {cold:.3f} |")
        text = "\n".join(lines)
        print(text)
        if args.output:
            Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
