"""Activations: derivatives against central differences (hypothesis), stability, bad names."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backprop_lab.engine.activations import ACTIVATIONS, get_activation, sigmoid

SMOOTH = ["sigmoid", "tanh", "softsign", "identity"]
KINKED = ["relu", "leaky_relu"]


@settings(max_examples=200, deadline=None)
@given(z=st.floats(-30, 30, allow_nan=False), name=st.sampled_from(SMOOTH))
def test_smooth_derivative_matches_central_difference(z: float, name: str) -> None:
    act = get_activation(name)
    h = 1e-6
    numeric = (act(np.array([z + h])) - act(np.array([z - h])))[0] / (2 * h)
    analytic = act.grad(act(np.array([z])))[0]
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9), (name, z, analytic, numeric)


@settings(max_examples=200, deadline=None)
@given(z=st.floats(-30, 30, allow_nan=False).filter(lambda v: abs(v) > 1e-4),
       name=st.sampled_from(KINKED))
def test_kinked_derivative_matches_central_difference_away_from_zero(z: float, name: str) -> None:
    act = get_activation(name)
    h = 1e-6
    numeric = (act(np.array([z + h])) - act(np.array([z - h])))[0] / (2 * h)
    assert act.grad(act(np.array([z])))[0] == pytest.approx(numeric, rel=1e-6)


@settings(max_examples=100, deadline=None)
@given(z=st.floats(-50, 50, allow_nan=False), name=st.sampled_from(sorted(ACTIVATIONS)))
def test_derivative_bounded_by_max_derivative(z: float, name: str) -> None:
    act = get_activation(name)
    d = act.grad(act(np.array([z])))[0]
    assert 0.0 <= d <= act.max_derivative + 1e-12


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_in_place_output_equals_fresh_output(name: str) -> None:
    act = get_activation(name)
    z = np.random.default_rng(0).normal(scale=5, size=(7, 11))
    fresh = act(z)
    buf = z.copy()
    act(buf, out=buf)
    np.testing.assert_array_equal(buf, fresh)
    np.testing.assert_array_equal(act.grad(fresh, out=np.empty_like(z)), act.grad(fresh))


def test_sigmoid_is_stable_without_clipping() -> None:
    z = np.linspace(-1e4, 1e4, 20001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any overflow/invalid RuntimeWarning fails the test
        s = sigmoid(z)
    assert np.all(np.isfinite(s)) and s.min() == 0.0 and s.max() == 1.0
    # Full relative precision deep in the negative tail, where 1 - sigmoid(-z) would give 0.
    assert sigmoid(np.array([-40.0]))[0] == pytest.approx(np.exp(-40.0), rel=1e-14)
    assert sigmoid(np.array([0.0]))[0] == 0.5


def test_unknown_activation_names_the_value_and_choices() -> None:
    with pytest.raises(ValueError, match=r"'swish'.*sigmoid, tanh, relu, leaky_relu, softsign"):
        get_activation("swish")
