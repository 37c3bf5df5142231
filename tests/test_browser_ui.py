"""The MLflow UI in a real browser (headless Chromium through playwright) over a small real
sweep: the runs page lists the parent with its children, a child's per-layer charts render in
layer order, the parent's gradient-flow page is drawn inside MLflow's artifact view (its
slider moves the plotted epoch, a hover shows a value), the parent's description holds the
sweep's table, and the runs table sorts the children by vanishing/log10_ratio_init. Screenshots: test-artifacts/browser/ (or
$BACKPROP_LAB_TEST_ARTIFACTS/browser). Run by `make test-browser` and .ci/run, which install
Debian's chromium and playwright first."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, runs_of, split_roles

pytestmark = pytest.mark.browser

sys.path.insert(0, str(REPO_ROOT / "scripts"))


def artifacts_dir() -> Path:
    root = Path(os.environ.get("BACKPROP_LAB_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    return root / "browser"


def test_mlflow_ui_shows_the_sweep_its_charts_and_its_gradient_flow_page(run_cli, store,
                                                                         client_for, tmp_path):
    pytest.importorskip("playwright")
    from ui_screenshots import check_pages, chromium_path, mlflow_ui

    chromium_path()  # fails with the install command if there is none
    tic = time.perf_counter()
    result = run_cli("-m", "activation=sigmoid,tanh", "model=deep", "model.depth=10",
                     "epochs=30", "histogram_every=10", f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    client = client_for(store)
    parents, jobs = split_roles(runs_of(client))
    assert "gradient_flow.html" in {a.path for a in client.list_artifacts(
        parents[0].info.run_id)}
    out = artifacts_dir()
    for old in out.glob("*.png"):
        old.unlink()
    with mlflow_ui(store, tmp_path / "mlflow-ui.log") as base:
        seconds = check_pages(base, parents[0].info.experiment_id, parents[0], jobs, out)
    assert set(seconds) == {"runs page", "metric charts", "gradient flow page",
                            "parent description", "runs sorted"}
    for name in ("runs_page", "run_metric_charts", "gradient_flow_mlflow",
                 "gradient_flow_hover", "parent_description", "runs_sorted_by_vanishing"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    print(f"browser test: {time.perf_counter() - tic:.1f} s; pages: {seconds}")
