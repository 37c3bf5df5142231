"""The benchmarks run: ``benchmarks/run.py --quick --only NAME`` on tiny sizes.

Each benchmark must produce its table with every row, finite positive numbers and its
correctness checks passed (same losses as torch, every multirun job recorded). Timings and
goals are never asserted here: benchmarks/RESULTS.md holds the measured ratios.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"

# Row labels (prefixes) each benchmark's table must have.
EXPECTED = {
    "torch": [f"{w}, {d}" for w in ("notebook", "deep", "wide mini-batch")
              for d in ("float64", "float32")],
    "diagnostics": ["notebook", "deep"],
    "tracking": ["flagship tracked", "the same with one log10 companion",
                 "flagship tracking=none", "per value: our writer",
                 "per value: MlflowClient", "vanishing_gradients study"],
    "flops": ["float64, diag on", "float64, diag off", "float32, diag on", "float32, diag off"],
    "multirun": ["6 jobs, 2 workers", "6 empty jobs (fixed cost)"],
    "memory": ["ours, diag on", "ours, diag off", "torch (reference)"],
    "floor": [f"{w}, {d}" for w in ("deep", "wide mini-batch") for d in ("float64", "float32")],
    # values: the jobs' summary.json timings (training, set-up, outputs) are all > 0
    "study": ["vanishing_gradients, basic: efficiency", "vanishing_gradients, joblib: efficiency",
              "vanishing_gradients, joblib (2 workers): speed-up"],
    "scaling": ["width 16", "width 64", "depth 2", "depth 5"],
    "cures": ["plain", "residual", "layer norm", "batch norm", "clip_norm", "both: residual + layer norm"],
}
TORCH_ONLY = {"torch", "floor", "scaling"}


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def run_quick(name: str, tmp_path: Path) -> tuple[str, dict, str]:
    report, rows = tmp_path / "RESULTS.md", tmp_path / "results.json"
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--only", name, "--output", str(report),
         "--json", str(rows)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return report.read_text(), json.loads(rows.read_text()), proc.stdout


@pytest.mark.parametrize("name", list(EXPECTED))
def test_benchmark_runs_on_tiny_sizes(name: str, tmp_path: Path) -> None:
    markdown, data, stdout = run_quick(name, tmp_path)
    (table,) = data["tables"]
    assert table["key"] == name
    if name in TORCH_ONLY and not has_torch():
        assert table["skipped"] and "torch" in table["skipped"]
        return
    assert table["skipped"] is None, table["skipped"]

    expected = [e for e in EXPECTED[name] if has_torch() or not e.startswith("torch")]
    cases = [row["case"] for row in table["rows"]]
    assert len(cases) == len(expected), cases
    for prefix in expected:
        assert sum(case.startswith(prefix) for case in cases) == 1, (prefix, cases)

    for row in table["rows"]:
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
        for key, value in row["values"].items():
            assert math.isfinite(value) and value > 0, (row["case"], key, value)
        assert row["status"] in ("PASS", "MISS", "info"), row
        assert row["ok"], f"a correctness check failed: {row}"  # losses agree, jobs recorded

    # The report: the machine's description, the table with every row, the summary.
    for heading in ("# Benchmark results", "## Machine", "## Summary", table["title"]):
        assert heading in markdown
    for case in cases:
        assert f"| {case} |" in markdown
    assert "numpy BLAS (threadpoolctl)" in markdown
    assert "## Summary" in stdout


def test_only_rejects_unknown_names(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(RUN), "--only", "nope"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
