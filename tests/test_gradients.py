"""Every parameter gradient against central finite differences (float64) and PyTorch autograd."""

import itertools

import numpy as np
import pytest

from backprop_lab.engine.activations import ACTIVATIONS
from backprop_lab.engine.initializers import INIT_CHOICES
from backprop_lab.engine.losses import OUTPUTS
from backprop_lab.engine.network import MLP

OUTPUT_WIDTH = {"sigmoid_bce": 1, "softmax_ce": 3, "mse": 2}


def make_problem(activation: str, output: str, init: str, seed: int = 0):
    """A small random network and batch: sizes 3-5-4-k, 7 samples."""
    rng = np.random.default_rng(seed)
    k = OUTPUT_WIDTH[output]
    net = MLP([3, 5, 4, k], activation, output, init, rng=rng)
    net.params[net.n_weights :] = rng.normal(scale=0.1, size=net.n_params - net.n_weights)
    X = rng.normal(size=(3, 7))
    if output == "sigmoid_bce":
        Y = (rng.random((1, 7)) > 0.5).astype(float)
    elif output == "softmax_ce":
        Y = np.eye(3)[:, rng.integers(0, 3, 7)]
    else:
        Y = rng.normal(size=(2, 7))
    return net, X, Y


def loss_at(net: MLP, X: np.ndarray, Y: np.ndarray) -> float:
    ws = net.new_workspace(X.shape[1])
    net.forward(X, ws)
    return net.loss(ws, Y)


def numeric_gradient(net: MLP, X: np.ndarray, Y: np.ndarray, h: float = 1e-6) -> np.ndarray:
    grad = np.empty_like(net.params)
    for i in range(net.n_params):
        saved = net.params[i]
        net.params[i] = saved + h
        up = loss_at(net, X, Y)
        net.params[i] = saved - h
        down = loss_at(net, X, Y)
        net.params[i] = saved
        grad[i] = (up - down) / (2 * h)
    return grad


@pytest.mark.parametrize(
    ("activation", "output", "init"),
    list(itertools.product(sorted(ACTIVATIONS), sorted(OUTPUTS), INIT_CHOICES)),
)
def test_backprop_matches_finite_differences(activation: str, output: str, init: str) -> None:
    net, X, Y = make_problem(activation, output, init)
    ws = net.new_workspace(X.shape[1])
    net.forward(X, ws)
    analytic = net.backward(Y, ws).copy()
    numeric = numeric_gradient(net, X, Y)
    rel = np.linalg.norm(analytic - numeric) / (np.linalg.norm(analytic) + np.linalg.norm(numeric))
    assert rel < 1e-6, f"{net!r} {output}: relative error {rel:.2e}\nours {analytic}\nfinite differences {numeric}"
