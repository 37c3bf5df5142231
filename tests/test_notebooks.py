"""The notebooks in analysis/: committed without outputs, and executable top to bottom against a
store given by the environment or by replacing their parameters cell."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from backprop_lab.analysis.notebooks import strip_outputs
from tests.test_analysis_store import ACTIVATIONS, REPO, cli_sweep

NOTEBOOKS = ("vanishing_gradients.ipynb", "compare_activations.ipynb")


@pytest.fixture(scope="session")
def analysis_store(tmp_path_factory):
    return cli_sweep(tmp_path_factory)


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(REPO / "analysis" / name, as_version=4)


def _parameters_cell(notebook) -> nbformat.NotebookNode:
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    return tagged[0]


def _execute(notebook, workdir, monkeypatch) -> str:
    """Run in a fresh kernel (the test's environment, with src importable); return the text of
    every output."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # keep the kernel's inline backend
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.extend(str(v) for k, v in output.get("data", {}).items()
                         if k.startswith("text/"))
    return "\n".join(texts)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_committed_without_outputs_and_with_a_parameters_cell(name):
    notebook = _read(name)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "strip the outputs"
    source = _parameters_cell(notebook).source
    for parameter in ("TRACKING_URI", "EXPERIMENT", "SWEEP"):
        assert parameter in source
    # Logic lives in the package: code cells only call it.
    assert not any(line.lstrip().startswith(("def ", "class ")) for cell in notebook.cells
                   if cell.cell_type == "code" for line in cell.source.splitlines())


def _check_outputs(notebook, text: str):
    figures = sum(1 for cell in notebook.cells for output in cell.get("outputs", [])
                  if "image/png" in output.get("data", {}))
    assert figures >= 4, f"only {figures} figures were drawn"
    assert "## Conclusion" in text
    for activation in ACTIVATIONS:
        assert f"**{activation} (" in text, activation  # a computed sentence per activation


def test_vanishing_gradients_notebook_runs_on_the_store_from_the_environment(
    analysis_store, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", analysis_store.uri)
    notebook = _read("vanishing_gradients.ipynb")
    text = _execute(notebook, tmp_path, monkeypatch)
    _check_outputs(notebook, text)
    assert analysis_store.parent_run_id in text  # the latest sweep was picked
    # After a run, the strip helper gives back exactly the committed file.
    executed = tmp_path / "executed.ipynb"
    nbformat.write(notebook, executed)
    assert strip_outputs(executed)
    committed = REPO / "analysis" / "vanishing_gradients.ipynb"
    assert executed.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8")


def test_compare_activations_notebook_runs_with_injected_parameters(
    analysis_store, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    notebook = _read("compare_activations.ipynb")
    _parameters_cell(notebook).source = (
        f"TRACKING_URI = {analysis_store.uri!r}\nEXPERIMENT = None\n"
        f"SWEEP = {analysis_store.parent_run_id!r}"
    )
    text = _execute(notebook, tmp_path, monkeypatch)
    _check_outputs(notebook, text)
