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


def test_schoenholz_deep_tanh_trains_near_criticality_not_in_the_ordered_phase(tmp_path):
    """Their Fig. 5, two cells: at depth 40, sigma_w^2 = 1 (6 xi_c = 21.8) does not train in
    10 epochs and sigma_w^2 = 1.75 (near the transition, 6 xi_c in the thousands) does."""
    sweep = sweep_of(tmp_path, "schoenholz_depth_scale", "model.sigma_w2=1.0,1.75",
                     "model.depth=40", "seed=0", "epochs=10")
    acc = sweep.runs.set_index("sigma_w2")["val/accuracy"]
    assert acc[1.0] < 0.5 < acc[1.75], acc


def test_dynamical_isometry_orthogonal_is_isometric_and_faster(tmp_path):
    """Shrunk: depth 48, one seed, 5 epochs."""
    from backprop_lab.analysis.papers.dynamical_isometry import jacobian_metrics

    sweep = sweep_of(tmp_path, "dynamical_isometry", "model.depth=48", "seed=0", "epochs=5")
    jac = jacobian_metrics(sweep.uri, sweep.runs)
    spread = jac[(jac["metric"] == "jacobian/spread") & (jac["epoch"] == 0)].set_index("init")
    assert spread.loc["orthogonal", "value"] < 5 and spread.loc["gaussian", "value"] > 100
    h = sweep.histories
    loss = h[(h["metric"] == "train/loss") & (h["epoch"] == 5)].set_index("init")["value"]
    assert loss["orthogonal"] < loss["gaussian"], loss
