"""Weight and bias initializers.

Each draws a weight matrix of shape (fan_out, fan_in) (the layer's W in z = W a + b). ``rng`` is
either numpy's modern ``Generator`` (the default everywhere) or a legacy ``RandomState``, which
reproduces code written against ``np.random.seed``: ``he`` and ``lecun`` then draw exactly
``np.random.randn(fan_out, fan_in) * scale`` as the reference notebook does.

Mean-field theory (engine/theory.py) describes an initializer by sigma_w^2 = fan_in Var(W) and
the bias variance sigma_b^2. The named initializers fix sigma_w^2 (stated below for equal
widths); ``gaussian`` and ``orthogonal`` take it as a parameter:

=================  ========================================  =========================  =========
name               distribution                               Var(W)                     sigma_w^2
=================  ========================================  =========================  =========
``he``             N(0, 2/fan_in)                             2/fan_in (He et al. 2015)  2
``lecun``          N(0, 1/fan_in) (the notebook's "Xavier")   1/fan_in                   1
``xavier_uniform`` U[-s, s], s = sqrt(6/(fan_in+fan_out))     2/(fan_in+fan_out)         1
                   (Glorot & Bengio 2010, "normalized")
``standard``       U[-1/sqrt(fan_in), 1/sqrt(fan_in)]         1/(3 fan_in)               1/3
                   (Glorot & Bengio 2010, eq. 1)
``gaussian``       N(0, sigma_w2/fan_in)                      sigma_w2/fan_in            sigma_w2
``orthogonal``     sqrt(sigma_w2 max(1, fan_out/fan_in)) Q,   sigma_w2/fan_in            sigma_w2
                   Q with orthonormal rows or columns
                   (Saxe et al. 2014)
``auto``           he for relu and leaky_relu, lecun otherwise (the notebook's rule)
=================  ========================================  =========================  =========

``orthogonal``: Q is the Q factor of a Gaussian matrix, signs fixed by R's diagonal so that Q is
Haar-distributed. Its gain is sqrt(sigma_w2) for square and narrowing layers (W W^T = sigma_w2 I);
an expanding layer (fan_out > fan_in, orthonormal columns) gets sqrt(fan_out/fan_in) more, so
that Var(W) = sigma_w2/fan_in for every shape, as mean-field theory assumes (then
||W a||^2 / fan_out = sigma_w2 ||a||^2 / fan_in).

Biases are zero unless sigma_b2 > 0; then they are drawn N(0, sigma_b2), after all the weights
(so the weights of a seed do not depend on sigma_b2).
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


def gaussian(rng: RandomSource, fan_in: int, fan_out: int, sigma_w2: float = 1.0) -> np.ndarray:
    """N(0, sigma_w2 / fan_in), shape (fan_out, fan_in)."""
    return _normal(rng, (fan_out, fan_in)) * math.sqrt(sigma_w2 / fan_in)


def orthogonal(rng: RandomSource, fan_in: int, fan_out: int, sigma_w2: float = 1.0) -> np.ndarray:
    """A scaled Haar-orthogonal matrix (fan_out, fan_in): orthonormal rows when fan_out <= fan_in,
    orthonormal columns otherwise, times sqrt(sigma_w2 max(1, fan_out/fan_in))."""
    big, small = max(fan_in, fan_out), min(fan_in, fan_out)
    q, r = np.linalg.qr(_normal(rng, (big, small)))  # q (big, small), orthonormal columns
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # Haar measure: signs of R's diagonal positive
    Q = q if fan_out >= fan_in else q.T
    return Q * math.sqrt(sigma_w2 * max(1.0, fan_out / fan_in))


#: Initializers of fixed variance: (rng, fan_in, fan_out) -> W.
INITIALIZERS: dict[str, Callable[[RandomSource, int, int], np.ndarray]] = {
    "he": he,
    "lecun": lecun,
    "xavier_uniform": xavier_uniform,
    "standard": standard,
}
#: Initializers that take sigma_w^2: (rng, fan_in, fan_out, sigma_w2) -> W.
SCALED_INITIALIZERS: dict[str, Callable[[RandomSource, int, int, float], np.ndarray]] = {
    "gaussian": gaussian,
    "orthogonal": orthogonal,
}
INIT_CHOICES: tuple[str, ...] = (*INITIALIZERS, *SCALED_INITIALIZERS, "auto")
#: sigma_w^2 = fan_in Var(W) of the named initializers for equal widths (fan_in = fan_out).
NAMED_SIGMA_W2: dict[str, float] = {"he": 2.0, "lecun": 1.0, "xavier_uniform": 1.0,
                                    "standard": 1.0 / 3.0}
#: sigma_w^2 of ``gaussian`` and ``orthogonal`` when none is given.
DEFAULT_SIGMA_W2 = 1.0


def check_init(name: str) -> str:
    if name not in INIT_CHOICES:
        raise ValueError(f"unknown initializer {name!r}; valid choices: {', '.join(INIT_CHOICES)}")
    return name


def check_variances(init: str, sigma_w2: float | None = None,
                    sigma_b2: float = 0.0) -> tuple[float | None, float]:
    """(sigma_w2, sigma_b2) checked for a concrete initializer ``init``.

    sigma_w2 must be a finite number > 0 and is taken only by ``gaussian`` and ``orthogonal``
    (None: :data:`DEFAULT_SIGMA_W2`); for the named initializers it must be None (their own is
    in :data:`NAMED_SIGMA_W2`) and None is returned. sigma_b2 must be finite and >= 0.
    """
    check_init(init)
    if sigma_w2 is not None:
        if init not in SCALED_INITIALIZERS:
            raise ValueError(
                f"sigma_w2={sigma_w2}: only {' and '.join(SCALED_INITIALIZERS)} take it; "
                f"{init} has its own (sigma_w^2 = {NAMED_SIGMA_W2.get(init, '?'):.3g} for "
                f"equal widths)")
        if not (math.isfinite(sigma_w2) and sigma_w2 > 0):
            raise ValueError(f"sigma_w2 must be a finite number > 0; got sigma_w2={sigma_w2}")
    elif init in SCALED_INITIALIZERS:
        sigma_w2 = DEFAULT_SIGMA_W2
    if sigma_b2 is None or not (math.isfinite(sigma_b2) and sigma_b2 >= 0):
        raise ValueError(f"sigma_b2 must be a finite number >= 0; got sigma_b2={sigma_b2}")
    return (None if sigma_w2 is None else float(sigma_w2)), float(sigma_b2)


def weight_variance(init: str, fan_in: int, fan_out: int, sigma_w2: float | None = None) -> float:
    """Var(W) of an initializer (after resolving ``auto`` yourself), for theory checks;
    ``sigma_w2`` for ``gaussian`` and ``orthogonal`` (None: :data:`DEFAULT_SIGMA_W2`)."""
    check_init(init)
    if init in SCALED_INITIALIZERS:
        return (DEFAULT_SIGMA_W2 if sigma_w2 is None else sigma_w2) / fan_in
    return {
        "he": 2.0 / fan_in,
        "lecun": 1.0 / fan_in,
        "xavier_uniform": 2.0 / (fan_in + fan_out),
        "standard": 1.0 / (3.0 * fan_in),
    }[init]


def resolve_init(activation: str, init: str) -> str:
    """The concrete initializer for ``init`` given the hidden activation (``auto`` resolved)."""
    check_init(init)
    if init != "auto":
        return init
    return get_activation(activation).default_init


def get_initializer(name: str, sigma_w2: float | None = None
                    ) -> Callable[[RandomSource, int, int], np.ndarray]:
    """Look a concrete initializer up by name (``auto`` must be resolved first); ``gaussian``
    and ``orthogonal`` are bound to ``sigma_w2`` (None: :data:`DEFAULT_SIGMA_W2`)."""
    check_init(name)
    if name == "auto":
        raise ValueError("'auto' depends on the activation: call resolve_init(activation, 'auto')")
    if name in SCALED_INITIALIZERS:
        s2 = DEFAULT_SIGMA_W2 if sigma_w2 is None else sigma_w2
        scaled = SCALED_INITIALIZERS[name]
        return lambda rng, fan_in, fan_out: scaled(rng, fan_in, fan_out, s2)
    return INITIALIZERS[name]


def draw_biases(rng: RandomSource, fan_out: int, sigma_b2: float) -> np.ndarray:
    """Biases (fan_out, 1) drawn N(0, sigma_b2)."""
    return _normal(rng, (fan_out, 1)) * math.sqrt(sigma_b2)
