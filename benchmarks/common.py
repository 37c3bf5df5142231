"""What every benchmark shares: result tables, interleaved timing, the machine's description.

Timings on a shared 2-core machine are noisy, so every benchmark measures the variants it
compares side by side in one run, interleaved (A B C, C B A, A B C, ...), and reports medians
of the repeats; goals are stated on ratios of those medians, never on absolute times.
"""

from __future__ import annotations

import cProfile
import datetime as _dt
import io
import math
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC_DIR = REPO_ROOT / "src"

PASS, MISS, INFO, SKIP = "PASS", "MISS", "info", "SKIP"


# -- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Goal:
    """A bound on a ratio: ``ratio <= bound`` or ``ratio >= bound``."""

    op: str  # "<=" | ">="
    bound: float

    def met(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


def at_most(bound: float) -> Goal:
    return Goal("<=", bound)


def at_least(bound: float) -> Goal:
    return Goal(">=", bound)


@dataclass
class Row:
    """One line of a benchmark's table: a case, its ratio, the goal, extra columns."""

    case: str
    ratio: float
    goal: Goal | None = None
    cells: dict[str, str] = field(default_factory=dict)  # formatted extra columns
    values: dict[str, float] = field(default_factory=dict)  # raw numbers (JSON, tests)
    ok: bool = True  # False: a correctness check of the row failed (status MISS)
    label: str | None = None  # what the ratio is, when it differs from the table's column

    @property
    def status(self) -> str:
        if not self.ok:
            return MISS
        if self.goal is None:
            return INFO
        return PASS if self.goal.met(self.ratio) else MISS


@dataclass
class Table:
    """A benchmark's results."""

    key: str
    title: str
    what: str  # what is measured and how (markdown)
    ratio_label: str  # the ratio column's header, e.g. "ours/torch"
    columns: list[str] = field(default_factory=list)  # extra columns, in order
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the benchmark did not run
    seconds: float = 0.0

    def add(self, row: Row) -> Row:
        for name in row.cells:
            if name not in self.columns:
                self.columns.append(name)
        self.rows.append(row)
        return row

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", "", self.what, ""]
        if self.skipped:
            lines += [f"**SKIPPED**: {self.skipped}", ""]
        if self.rows:
            header = ["case", *self.columns, self.ratio_label, "goal", "status"]
            lines.append("| " + " | ".join(header) + " |")
            aligns = ["---"] + ["---:"] * (len(header) - 3) + ["---", "---"]
            lines.append("|" + "|".join(aligns) + "|")
            for row in self.rows:
                cells = [row.cells.get(c, "") for c in self.columns]
                goal = str(row.goal) if row.goal else ""
                status = f"**{row.status}**" if row.status == MISS else row.status
                lines.append(
                    "| " + " | ".join([row.case, *cells, fmt_ratio(row.ratio), goal, status]) + " |"
                )
            lines.append("")
        for note in self.notes:
            lines += [note, ""]
        lines.append(f"_({self.seconds:.0f} s)_")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "rows": [
                {
                    "case": r.case,
                    "ratio": r.ratio,
                    "goal": str(r.goal) if r.goal else None,
                    "status": r.status,
                    "ok": r.ok,
                    "values": r.values,
                    "cells": r.cells,
                }
                for r in self.rows
            ],
        }


# -- formatting ----------------------------------------------------------------------------------
def fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_ratio(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:#.3g}" if abs(value) < 100 else f"{value:.0f}"


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# -- timing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One measurement: wall-clock seconds and CPU seconds of the calling thread.

    With one BLAS/torch thread all the arithmetic runs in the calling thread, so its CPU time
    is the work done, unaffected by the time the thread waits for a core other processes hold
    (the wall time of a shared 2-core machine is not); both are reported.
    """

    wall: float
    cpu: float

    def __truediv__(self, n: float) -> Sample:
        return Sample(self.wall / n, self.cpu / n)


class Timer:
    """``with Timer() as t: ...`` then ``t.sample``."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample = Sample(time.perf_counter() - self._wall, time.thread_time() - self._cpu)


def primary(sample: Sample, threads: int) -> float:
    """The time a ratio is taken on: the thread's CPU time with one thread, else wall time."""
    return sample.cpu if threads == 1 else sample.wall


def clock_note(threads: int) -> str:
    if threads == 1:
        return ("Times are CPU seconds of the benchmark's thread (one BLAS/torch thread: all the "
                "work runs in it), so time spent waiting for a core held by other processes is "
                "left out; `wall` columns give the same ratio on wall-clock time.")
    return "Times are wall-clock seconds (several threads)."


def medians(samples: list[Sample]) -> Sample:
    return Sample(median([s.wall for s in samples]), median([s.cpu for s in samples]))


def interleaved(
    variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, list[Any]]:
    """Run every variant ``repeats`` times, interleaved (A B C, C B A, A B C, ...).

    Each variant is a callable that makes one measurement and returns the seconds (or the
    :class:`Sample`) that count: it times itself, so setup such as building a network stays
    outside. ``warmup`` rounds run
    first and are discarded (first-touch page faults, lazy imports, BLAS buffers).
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[Any]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(variants[name]())
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def profile_top(fn: Callable[[], Any], n: int = 12, sort: str = "tottime") -> str:
    """cProfile ``fn()`` once; the ``n`` most expensive functions as text."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(n)
    text = out.getvalue()
    start = text.find("   ncalls")
    return text[start:].rstrip() if start >= 0 else text.rstrip()


def details(summary: str, body: str) -> str:
    """A collapsed block for RESULTS.md (profiles, raw numbers)."""
    return f"<details><summary>{summary}</summary>\n\n```\n{body}\n```\n</details>"


# -- threads and environment ---------------------------------------------------------------------
def subprocess_env(threads: int, **extra: str) -> dict[str, str]:
    """Environment for benchmark subprocesses: BLAS/OpenMP threads pinned, no telemetry."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC_DIR), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


#: Why a benchmark against PyTorch is skipped.
TORCH_MISSING = "torch is not installed (optional extra: `pip install -e '.[torch]'`)"


# -- the machine ---------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info(threads: int) -> dict[str, str]:
    """The machine and software the numbers were measured on (call inside the thread limit)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    info: dict[str, str] = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable",
        "memory": _memory(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": _version("torch"),
        "mlflow": _version("mlflow"),
        "hydra-core": _version("hydra-core"),
        "threads": f"{threads} (threadpoolctl limit on BLAS/OpenMP; torch.set_num_threads)",
        "OPENBLAS_CORETYPE": repr(os.environ.get("OPENBLAS_CORETYPE")),
        "load average at start": load_average(),
    }
    blas = []
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            blas.append(
                f"{pool.get('internal_api')} {pool.get('version')} "
                f"(kernel {pool.get('architecture')}, {pool.get('threading_layer')}, "
                f"{pool.get('num_threads')} thread(s) under the limit)"
            )
    info["numpy BLAS (threadpoolctl)"] = "; ".join(blas) or "none found"
    return info


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
