"""The papers' qualitative claims on shrunk versions of their experiments, through the real CLI
(slow: about a minute on one core)."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from backprop_lab.analysis import load_sweep
from backprop_lab.analysis.papers.he_init_depth import loss_table
from tests.test_analysis_store import REPO, subprocess_env

pytestmark = pytest.mark.slow


def sweep_of(tmp_path, experiment: str, *overrides: str):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", f"experiment={experiment}", *overrides,
         "progress=false", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=900,
        check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    return load_sweep(uri, sweep=re.search(r"MLflow parent run (\w+)", log)[1])


def test_glorot_bengio_sigmoid_top_layer_saturates_toward_zero_early(tmp_path):
    """Their Fig. 2: the top hidden layer's mean sigmoid activation falls below its initial
    value in the first epochs, toward 0 (here 2000 MNIST-1D samples, width 64, 15 epochs of
    100 updates: below 80% of its initial value)."""
    sweep = sweep_of(tmp_path, "glorot_bengio", "dataset=mnist1d", "activation=sigmoid",
                     "model.init=standard", "seed=0", "epochs=15", "model.width=64",
                     "dataset.n_samples=200", "histogram_every=0")
    h = sweep.histories
    top = h[(h["metric"] == "act_mean") & (h["layer"] == 5)].sort_values("epoch")["value"]
    values = top.to_numpy()
    assert values.size == 16
    assert values[3] < values[0] and values[-1] < values[0]
    assert values.min() < 0.8 * values[0], values


def test_he_init_trains_the_30_layer_relu_network_to_a_lower_loss_than_xavier(tmp_path):
    """Their Fig. 3, shrunk: 30 epochs of the 30-layer network, one seed."""
    sweep = sweep_of(tmp_path, "he_init_depth", "model.depth=30", "seed=0", "epochs=30",
                     "histogram_every=0")
    h = sweep.histories
    final = {init: float(sub.sort_values("epoch")["value"].iloc[-1])
             for init, sub in h[h["metric"] == "train/loss"].groupby("init", observed=True)}
    assert final["he"] < 0.5 * final["xavier_uniform"], final
    table = loss_table(sweep.runs, sweep.histories).set_index("init")
    assert table.loc["he", "converged"] == 1 and table.loc["xavier_uniform", "stalled"] == 1
    assert np.isfinite(final["he"])
