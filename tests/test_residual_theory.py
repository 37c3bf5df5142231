"""Mean-field theory of residual networks (engine/residual_theory.py) against wide residual
networks at initialization, and against the plain theory where the two must agree."""

import numpy as np
import pytest

from backprop_lab.engine.blocks import BlockMLP
from backprop_lab.engine.datasets import Dataset
from backprop_lab.engine.optimizers import make_optimizer
from backprop_lab.engine.residual_theory import residual_mean_field
from backprop_lab.engine.theory import mean_field
from backprop_lab.engine.training import train

WIDTH, DEPTH, SAMPLES, SEEDS = 256, 10, 256, (0, 1, 2)


def geometric_mean(x: np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(x))))


def test_the_residual_recursion_without_skips_is_the_plain_one() -> None:
    """A residual step multiplies Var(delta) by 1 + alpha^2 sigma_w^2 E[f'^2] (times the ratio
    of E[f'^2] of the two layers); as alpha -> 0 the forward map is the first layer's."""
    rmf = residual_mean_field("relu", "he", [8, 64, 64, 64, 64, 2], residual_scale=0.5)
    # relu + he: sigma_w^2 E[f'^2] = 1 and E[f'^2] = 1/2 everywhere: factor 1 + alpha^2.
    np.testing.assert_allclose(rmf.chi[1:-1], 1 + 0.25, rtol=1e-12)
    plain = mean_field("relu", "he", [8, 64, 2])
    assert rmf.q[0] == pytest.approx(plain.q[0])
    with pytest.raises(ValueError, match="equal width"):
        residual_mean_field("tanh", "lecun", [8, 64, 32, 2])


@pytest.mark.parametrize(("activation", "init", "alpha"), [
    ("tanh", "lecun", 1.0), ("tanh", "lecun", 0.3), ("relu", "he", 0.5), ("sigmoid", "lecun", 1.0),
])
def test_wide_residual_networks_show_the_predicted_delta_factor(activation, init, alpha) -> None:
    """Per-layer factor std(delta^l) / std(delta^(l+1)) over the residual layers, geometric mean
    over layers and 3 networks 256 wide, within 2% of the residual mean field (the plain
    theory's factor, which has no skip path, is off by more where alpha is not small)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((WIDTH, SAMPLES))
    Y = np.eye(10)[:, rng.integers(0, 10, SAMPLES)]
    data = Dataset("gaussian", X, Y, X[:, :0], Y[:, :0], n_classes=10)
    sizes = [WIDTH] + [WIDTH] * DEPTH + [10]
    rows = []
    for seed in SEEDS:
        net = BlockMLP(sizes, activation, "softmax_ce", init, rng=np.random.default_rng(seed),
                       residual=True, residual_scale=alpha)
        rows.append(train(net, data, make_optimizer("gd", lr=0.1), epochs=0)
                    .history.layers["delta_std"][0])
    ds = np.array(rows)
    measured = ds[:, 1 : DEPTH - 1] / ds[:, 2:DEPTH]  # residual layer below a residual layer
    theory = residual_mean_field(activation, init, sizes, alpha, input_var=float(np.mean(X**2)))
    predicted = theory.std_factors[1 : DEPTH - 1]
    ratio = geometric_mean(measured) / geometric_mean(predicted)
    assert ratio == pytest.approx(1.0, abs=0.02), (measured.mean(axis=0), predicted)
    if alpha >= 0.5:
        plain = mean_field(activation, init, sizes, input_var=float(np.mean(X**2)))
        off = geometric_mean(measured) / geometric_mean(plain.std_factors[1 : DEPTH - 1])
        assert abs(off - 1) > 0.04, off
