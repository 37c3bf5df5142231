"""`python -m backprop_lab.analysis.report`: figures and summary written to a folder and attached to the
sweep's parent run under report/."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow import MlflowClient

from backprop_lab.analysis import load_sweep, report, summary
from tests.test_analysis_store import cli_sweep, subprocess_env

FIGURES = (
    "vanishing_profile",
    "grad_weight_ratio",
    "gradient_ratio_vs_depth",
    "learning_curves",
    "saturation_heatmaps",
    "final_accuracy_vs_depth",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def analysis_store(tmp_path_factory):
    return cli_sweep(tmp_path_factory)


def test_report_writes_figures_and_summary_and_logs_them_to_the_parent_run(
    analysis_store, tmp_path, capsys
):
    out = tmp_path / "report"
    assert report.main(["--uri", analysis_store.uri, "--out", str(out), "--dpi", "60"]) == 0
    expected = {f"{name}.png" for name in FIGURES} | {"summary.md", "gradient_flow.html"}
    assert {p.name for p in out.iterdir()} == expected
    for name in FIGURES:
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    text = (out / "summary.md").read_text(encoding="utf-8")
    sweep = load_sweep(analysis_store.uri)
    for line in summary.conclusions(sweep.runs, sweep.histories):
        assert line in text
    for name in FIGURES:
        assert f"]({name}.png)" in text
    client = MlflowClient(tracking_uri=analysis_store.uri)
    logged = client.list_artifacts(analysis_store.parent_run_id, report.REPORT_ARTIFACT_PATH)
    assert {a.path for a in logged} == {f"report/{name}" for name in expected}
    copy = client.download_artifacts(analysis_store.parent_run_id, "report/summary.md",
                                     str(tmp_path / "downloaded"))
    assert open(copy, encoding="utf-8").read() == text
    assert f"logged {len(expected)} files to run {analysis_store.parent_run_id}" in (
        capsys.readouterr().out
    )


def test_report_on_a_whole_experiment_has_no_parent_run_to_log_to(
    analysis_store, tmp_path, capsys
):
    out = tmp_path / "all"
    assert report.main(["--uri", analysis_store.uri, "--all-runs", "--out", str(out),
                        "--dpi", "40"]) == 0
    assert (out / "summary.md").is_file() and len(list(out.glob("*.png"))) == len(FIGURES)
    assert "all runs of the experiment" in (out / "summary.md").read_text(encoding="utf-8")
    assert "report not logged" in capsys.readouterr().out


def test_report_is_a_runnable_module():
    done = subprocess.run([sys.executable, "-m", "backprop_lab.analysis.report", "--help"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    for option in ("--uri", "--experiment", "--sweep", "--out", "--all-runs", "--no-log"):
        assert option in done.stdout


def test_report_fails_cleanly_on_an_unknown_experiment(analysis_store, tmp_path, capsys):
    assert report.main(["--uri", analysis_store.uri, "--experiment", "nope", "--out",
                        str(tmp_path / "x")]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
