"""Every gradient against PyTorch float64 autograd on the same weights (skipped without torch)."""

import itertools

import numpy as np
import pytest

from backprop_lab.engine.activations import ACTIVATIONS
from backprop_lab.engine.losses import OUTPUTS
from backprop_lab.engine.network import MLP
from tests.test_gradients import make_problem

torch = pytest.importorskip("torch", reason="PyTorch is optional: pip install -e '.[torch]'")


def torch_reference(net: MLP, X: np.ndarray, Y: np.ndarray):
    """Loss and every gradient computed by PyTorch autograd in float64, same weights."""
    act = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, 0.01),
        "softsign": torch.nn.functional.softsign,
        "identity": lambda z: z,
    }[net.activation.name]
    Ws = [torch.tensor(W, requires_grad=True) for W in net.weights]
    bs = [torch.tensor(b, requires_grad=True) for b in net.biases]
    a = torch.tensor(X)
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = W @ a + b
        a = act(z) if l < len(Ws) - 1 else z
    y = torch.tensor(Y)
    m = X.shape[1]
    if net.head.name == "sigmoid_bce":
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a, y, reduction="sum") / m
    elif net.head.name == "softmax_ce":
        loss = -(y * torch.log_softmax(a, dim=0)).sum() / m
    else:
        loss = 0.5 * ((a - y) ** 2).sum() / m
    loss.backward()
    return loss.item(), [W.grad.numpy() for W in Ws], [b.grad.numpy() for b in bs]


@pytest.mark.parametrize(
    ("activation", "output"), list(itertools.product(sorted(ACTIVATIONS), sorted(OUTPUTS)))
)
def test_backprop_matches_pytorch_autograd(activation: str, output: str) -> None:
    net, X, Y = make_problem(activation, output, "auto", seed=1)
    ws = net.new_workspace(X.shape[1])
    net.forward(X, ws)
    ours_loss = net.loss(ws, Y)
    net.backward(Y, ws)
    ref_loss, ref_dW, ref_db = torch_reference(net, X, Y)
    assert ours_loss == pytest.approx(ref_loss, rel=1e-12)
    for l, (ours, ref) in enumerate(zip(net.grad_weights + net.grad_biases, ref_dW + ref_db)):
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-14, err_msg=f"parameter {l}: ours vs torch")
