"""Initializers by variance: gaussian and orthogonal with sigma_w^2, biases with sigma_b^2."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from backprop_lab.engine.initializers import (
    NAMED_SIGMA_W2,
    check_variances,
    gaussian,
    orthogonal,
    weight_variance,
)
from backprop_lab.engine.network import MLP


@pytest.mark.parametrize(("fan_in", "fan_out"), [(64, 64), (100, 30), (30, 100)])
def test_orthogonal_is_a_scaled_isometry_of_the_stated_variance(fan_in, fan_out) -> None:
    s2 = 1.76
    W = orthogonal(np.random.default_rng(0), fan_in, fan_out, s2)
    assert W.shape == (fan_out, fan_in)
    # Var(W) = sigma_w2 / fan_in for every shape (sum of squares exactly, no sampling error).
    assert math.isclose(np.sum(W**2) / W.size, s2 / fan_in, rel_tol=1e-12)
    # Orthonormal rows (narrowing or square) or columns (expanding), up to the scale.
    gram = W @ W.T if fan_out <= fan_in else W.T @ W
    scale = s2 * max(1.0, fan_out / fan_in)
    np.testing.assert_allclose(gram, scale * np.eye(min(fan_in, fan_out)), atol=1e-12)


def test_orthogonal_is_haar_not_biased_by_qr_signs() -> None:
    """Without the sign fix, numpy's QR makes R's diagonal negative-leaning and Q's diagonal
    entries biased; Haar matrices have E[Q_ii] = 0."""
    diag = np.array([np.diag(orthogonal(np.random.default_rng(s), 8, 8)) for s in range(400)])
    assert abs(diag.mean()) < 4 * diag.std() / math.sqrt(diag.size)


def test_gaussian_variance_and_bias_variance() -> None:
    W = gaussian(np.random.default_rng(1), 400, 300, 2.5)
    assert abs(W.var() / (2.5 / 400) - 1) < 4 * math.sqrt(2 / W.size)
    net = MLP([50, 400, 400, 3], "tanh", "softmax_ce", "gaussian", np.random.default_rng(2),
              sigma_w2=2.5, sigma_b2=0.05)
    b = np.concatenate([x.ravel() for x in net.biases])
    assert abs(b.var() / 0.05 - 1) < 4 * math.sqrt(2 / b.size)


def test_biases_do_not_change_the_weights_of_a_seed() -> None:
    a = MLP([5, 8, 8, 2], "tanh", "mse", "gaussian", np.random.default_rng(3), sigma_w2=1.5)
    b = MLP([5, 8, 8, 2], "tanh", "mse", "gaussian", np.random.default_rng(3), sigma_w2=1.5,
            sigma_b2=0.1)
    np.testing.assert_array_equal(a.params[: a.n_weights], b.params[: b.n_weights])
    assert not a.params[a.n_weights:].any() and b.params[b.n_weights:].all()


@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_same_seed_same_network(init: str) -> None:
    def make():
        return MLP([4, 6, 3, 2], "tanh", "mse", init, np.random.default_rng(9), sigma_w2=1.76,
                   sigma_b2=0.05).params
    np.testing.assert_array_equal(make(), make())


def test_named_initializers_state_their_sigma_w2() -> None:
    for init, s2 in NAMED_SIGMA_W2.items():
        assert math.isclose(64 * weight_variance(init, 64, 64), s2)
    assert repr(MLP([2, 4, 1], init="orthogonal", sigma_w2=1.76, sigma_b2=0.05)) == \
        "MLP(2-4-1, tanh, orthogonal 1.76, sigma_b2 0.05)"


@pytest.mark.parametrize(
    ("init", "sigma_w2", "sigma_b2", "message"),
    [
        ("gaussian", -1.0, 0.0, "sigma_w2 must be a finite number > 0; got sigma_w2=-1.0"),
        ("orthogonal", 0.0, 0.0, "sigma_w2 must be a finite number > 0; got sigma_w2=0.0"),
        ("gaussian", math.nan, 0.0, "got sigma_w2=nan"),
        ("gaussian", math.inf, 0.0, "got sigma_w2=inf"),
        ("gaussian", 1.0, -0.1, "sigma_b2 must be a finite number >= 0; got sigma_b2=-0.1"),
        ("he", None, math.nan, "got sigma_b2=nan"),
        ("lecun", 2.0, 0.0, "sigma_w2=2.0: only gaussian and orthogonal take it; lecun has its "
                            "own (sigma_w^2 = 1 for equal widths)"),
    ],
)
def test_bad_variances_are_named(init, sigma_w2, sigma_b2, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_variances(init, sigma_w2, sigma_b2)
