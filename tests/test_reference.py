"""Reproduce the reference notebook and the theory of gradient flow at initialization."""

import numpy as np
import pytest

from backprop_lab.engine.datasets import Dataset, load_dataset
from backprop_lab.engine.history import layer_metric_name
from backprop_lab.engine.network import MLP
from backprop_lab.engine.optimizers import make_optimizer
from backprop_lab.engine.theory import backprop_std_factor
from backprop_lab.engine.training import train

# The notebook's printed log: "Epoch k" is its loop index k-1, our history row k-1.
NOTEBOOK_LOSS = {100: 0.0972, 200: 0.0317, 300: 0.0142, 400: 0.0089, 500: 0.0063,
                 600: 0.0049, 700: 0.0040, 800: 0.0033, 900: 0.0028, 1000: 0.0025}
# Its gradient analysis after training: per layer |W|, |dW|, |dW|/|W|.
NOTEBOOK_LAYERS = [(5.5906, 0.000599, 0.000107), (6.6835, 0.001579, 0.000236),
                   (6.0204, 0.001867, 0.000310)]


@pytest.fixture(scope="module")
def notebook_run():
    rng = np.random.RandomState(42)  # one legacy stream: data first, then weights
    data = load_dataset("spiral", n_samples=200, noise=0.3, val_fraction=0.0, rng=rng)
    net = MLP([2, 16, 8, 1], "tanh", "sigmoid_bce", "auto", rng=rng)
    return train(net, data, make_optimizer("gd", lr=0.5), epochs=1000)


@pytest.mark.parametrize("printed_epoch", sorted(NOTEBOOK_LOSS))
def test_notebook_loss_log_within_2_percent(notebook_run, printed_epoch: int) -> None:
    ours = notebook_run.history.scalars["train/loss"][printed_epoch - 1]
    assert ours == pytest.approx(NOTEBOOK_LOSS[printed_epoch], rel=0.02)


def test_notebook_accuracy(notebook_run) -> None:
    acc = notebook_run.history.scalars["train/accuracy"]
    assert acc[99] == pytest.approx(0.99)
    assert acc[999] == 1.0 and notebook_run.final["train/accuracy"] == 1.0


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_notebook_gradient_analysis_within_10_percent(notebook_run, layer: int) -> None:
    final = notebook_run.final  # the trained network, as the notebook analyses it
    w, dw, ratio = NOTEBOOK_LAYERS[layer - 1]
    assert final[layer_metric_name("weight_norm", layer)] == pytest.approx(w, rel=0.10)
    assert final[layer_metric_name("grad_norm", layer)] == pytest.approx(dw, rel=0.10)
    assert final[layer_metric_name("grad_weight_ratio", layer)] == pytest.approx(ratio, rel=0.10)


def gaussian_data(width: int, m: int, classes: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((width, m))
    Y = np.eye(classes)[:, rng.integers(0, classes, m)]
    return Dataset("gaussian", X, Y, X[:, :0], Y[:, :0], n_classes=classes)


@pytest.mark.parametrize(
    ("activation", "init", "expected"),
    [("tanh", "standard", 0.577), ("relu", "he", 1.0), ("sigmoid", "standard", 0.144),
     ("relu", "xavier_uniform", 0.707)],
)
def test_delta_std_factor_per_layer_matches_theory_at_initialization(activation, init, expected):
    """Deep (12 hidden layers), wide (256) network at initialization, measured by the trainer's
    own diagnostics (row 0): the geometric-mean factor of delta_std per layer going down matches
    sqrt(n Var(W) E[f'^2]) within 5%, and ReLU + He keeps delta_std within a factor 1.25 of
    constant across all hidden layers."""
    width, depth = 256, 12
    assert backprop_std_factor(activation, init, width, width) == pytest.approx(expected, abs=1e-3)
    data = gaussian_data(width, 512, classes=10, seed=0)
    net = MLP([width] + [width] * depth + [10], activation, "softmax_ce", init,
              rng=np.random.default_rng(1))
    result = train(net, data, make_optimizer("gd", lr=0.1), epochs=0)
    delta_std = result.history.layers["delta_std"][0, :depth]  # hidden layers 1..12
    factors = delta_std[:-1] / delta_std[1:]  # layer l over layer l+1
    # The top hidden layer sits under a 10-wide output layer; measure below it.
    geometric_mean = np.exp(np.mean(np.log(factors[:-1])))
    assert geometric_mean == pytest.approx(expected, rel=0.05), factors
    if activation == "relu" and init == "he":
        assert delta_std.max() / delta_std.min() < 1.25
