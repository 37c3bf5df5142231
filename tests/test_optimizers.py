"""Optimizers: updates against PyTorch's torch.optim (when installed) and their own formulas."""

import numpy as np
import pytest

from backprop_lab.engine.network import MLP
from backprop_lab.engine.optimizers import make_optimizer

CASES = [
    ("gd", {}),
    ("sgd", {"weight_decay": 0.1}),
    ("momentum", {"momentum": 0.9}),
    ("momentum", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.01}),
    ("adam", {}),
    ("adam", {"beta1": 0.8, "beta2": 0.99, "weight_decay": 0.05}),
]


def run_ours(name: str, kwargs: dict, grads: list[np.ndarray]) -> np.ndarray:
    net = MLP([3, 4, 2], "tanh", "mse", rng=np.random.default_rng(0))
    opt = make_optimizer(name, lr=0.05, **kwargs)
    for g in grads:
        net.grads[:] = g
        opt.step(net)
    return net.params.copy(), net


def test_gradient_descent_formula() -> None:
    g = np.random.default_rng(1).normal(size=(3 * 4 + 4 * 2 + 6))
    net0 = MLP([3, 4, 2], "tanh", "mse", rng=np.random.default_rng(0))
    after, _ = run_ours("gd", {}, [g])
    np.testing.assert_array_equal(after, net0.params - 0.05 * g)


def test_weight_decay_spares_biases() -> None:
    net0 = MLP([3, 4, 2], "tanh", "mse", rng=np.random.default_rng(0))
    zero = np.zeros(net0.n_params)
    after, net = run_ours("sgd", {"weight_decay": 0.1}, [zero])
    nw = net.n_weights
    np.testing.assert_allclose(after[:nw], net0.params[:nw] * (1 - 0.05 * 0.1))
    np.testing.assert_array_equal(after[nw:], net0.params[nw:])


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_matches_torch_optim(name: str, kwargs: dict) -> None:
    torch = pytest.importorskip("torch", reason="PyTorch is optional: pip install -e '.[torch]'")
    rng = np.random.default_rng(2)
    net0 = MLP([3, 4, 2], "tanh", "mse", rng=np.random.default_rng(0))
    grads = [rng.normal(size=net0.n_params) for _ in range(5)]
    ours, net = run_ours(name, kwargs, grads)

    nw = net.n_weights
    w = torch.tensor(net0.params[:nw].copy(), requires_grad=True)
    b = torch.tensor(net0.params[nw:].copy(), requires_grad=True)
    decay = kwargs.get("weight_decay", 0.0)
    groups = [{"params": [w], "weight_decay": decay}, {"params": [b], "weight_decay": 0.0}]
    if name in ("gd", "sgd"):
        opt = torch.optim.SGD(groups, lr=0.05)
    elif name == "momentum":
        opt = torch.optim.SGD(groups, lr=0.05, momentum=kwargs["momentum"],
                              nesterov=kwargs.get("nesterov", False))
    else:
        betas = (kwargs.get("beta1", 0.9), kwargs.get("beta2", 0.999))
        opt = torch.optim.Adam(groups, lr=0.05, betas=betas, eps=1e-8)
    for g in grads:
        w.grad = torch.tensor(g[:nw].copy())
        b.grad = torch.tensor(g[nw:].copy())
        opt.step()
    ref = np.concatenate([w.detach().numpy(), b.detach().numpy()])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14, err_msg=f"{name} {kwargs}: ours vs torch")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"name": "momentum", "lr": 0.1, "momentum": 1.0}, r"momentum must be in \[0, 1\)"),
     ({"name": "adam", "lr": 0.1, "beta2": 1.5}, r"beta2 must be in \[0, 1\)"),
     ({"name": "gd", "lr": float("nan")}, r"learning rate must be a positive number"),
     ({"name": "gd", "lr": 0.1, "weight_decay": -1.0}, r"weight_decay must be >= 0"),
     # An unknown hyper-parameter is an error, never silently ignored.
     ({"name": "gd", "lr": 0.1, "momentum": 0.9},
      r"optimizer 'gd' has no hyper-parameter momentum; it takes lr, weight_decay"),
     ({"name": "adam", "lr": 0.1, "beta3": 0.5, "nesterov": True},
      r"optimizer 'adam' has no hyper-parameter beta3, nesterov; it takes lr, beta1, beta2, eps")],
)
def test_bad_hyperparameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_optimizer(**kwargs)
