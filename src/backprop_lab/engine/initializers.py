"""Weight initializers.

Each draws a weight matrix of shape (fan_out, fan_in) (the layer's W in z = W a + b); biases start
at zero. ``rng`` is either numpy's modern ``Generator`` (the default everywhere) or a legacy
``RandomState``, which reproduces code written against ``np.random.seed``: ``he`` and ``lecun``
then draw exactly ``np.random.randn(fan_out, fan_in) * scale`` as the reference notebook does.

=================  ==========================================  ===========================
name               distribution                                 Var(W)
=================  ==========================================  ===========================
``he``             N(0, 2/fan_in)                               2/fan_in (He et al. 2015)
``lecun``          N(0, 1/fan_in) (the notebook's "Xavier")     1/fan_in
``xavier_uniform`` U[-s, s], s = sqrt(6/(fan_in+fan_out))       2/(fan_in+fan_out)
                   (Glorot & Bengio 2010, "normalized")
``standard``       U[-1/sqrt(fan_in), 1/sqrt(fan_in)]           1/(3 fan_in)
                   (Glorot & Bengio 2010, eq. 1)
``auto``           he for relu and leaky_relu, lecun otherwise (the notebook's rule)
=================  ==========================================  ===========================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from backprop_lab.engine.activations import get_activation

RandomSource = np.random.Generator | np.random.RandomState


def _normal(rng: RandomSource, shape: tuple[int, int]) -> np.ndarray:
    if isinstance(rng, np.random.RandomState):
        return rng.randn(*shape)
    return rng.standard_normal(shape)


def _uniform(rng: RandomSource, limit: float, shape: tuple[int, int]) -> np.ndarray:
    return rng.uniform(-limit, limit, size=shape)


def he(rng: RandomSource, fan_in: int, fan_out: int) -> np.ndarray:
    return _normal(rng, (fan_out, fan_in)) * math.sqrt(2.0 / fan_in)


def lecun(rng: RandomSource, fan_in: int, fan_out: int) -> np.ndarray:
    return _normal(rng, (fan_out, fan_in)) * math.sqrt(1.0 / fan_in)


def xavier_uniform(rng: RandomSource, fan_in: int, fan_out: int) -> np.ndarray:
    return _uniform(rng, math.sqrt(6.0 / (fan_in + fan_out)), (fan_out, fan_in))


def standard(rng: RandomSource, fan_in: int, fan_out: int) -> np.ndarray:
    return _uniform(rng, 1.0 / math.sqrt(fan_in), (fan_out, fan_in))


INITIALIZERS: dict[str, Callable[[RandomSource, int, int], np.ndarray]] = {
    "he": he,
    "lecun": lecun,
    "xavier_uniform": xavier_uniform,
    "standard": standard,
}
INIT_CHOICES: tuple[str, ...] = (*INITIALIZERS, "auto")


def weight_variance(init: str, fan_in: int, fan_out: int) -> float:
    """Var(W) of an initializer (after resolving ``auto`` yourself), for theory checks."""
    return {
        "he": 2.0 / fan_in,
        "lecun": 1.0 / fan_in,
        "xavier_uniform": 2.0 / (fan_in + fan_out),
        "standard": 1.0 / (3.0 * fan_in),
    }[check_init(init)]


def check_init(name: str) -> str:
    if name not in INIT_CHOICES:
        raise ValueError(f"unknown initializer {name!r}; valid choices: {', '.join(INIT_CHOICES)}")
    return name


def resolve_init(activation: str, init: str) -> str:
    """The concrete initializer for ``init`` given the hidden activation (``auto`` resolved)."""
    check_init(init)
    if init != "auto":
        return init
    return get_activation(activation).default_init


def get_initializer(name: str) -> Callable[[RandomSource, int, int], np.ndarray]:
    """Look a concrete initializer up by name (``auto`` must be resolved first)."""
    check_init(name)
    if name == "auto":
        raise ValueError("'auto' depends on the activation: call resolve_init(activation, 'auto')")
    return INITIALIZERS[name]
