"""Hidden-layer activation functions and their derivatives.

Every activation maps a pre-activation array ``z`` of any shape to ``a = f(z)`` element-wise and
gives the derivative ``f'(z)`` as a function of the output ``a`` alone (``tanh' = 1 - a**2``,
``sigmoid' = a(1-a)``, ``relu' = [a > 0]``), so the network can apply activations in place.

``max_derivative`` is the largest value ``f'`` takes; the saturation diagnostic counts a unit as
saturated where ``f'(z) < 0.05 * max_derivative`` (the flat tails of sigmoid and tanh, the zero
side of relu).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Array = np.ndarray


def sigmoid(z: Array, out: Array | None = None) -> Array:
    """Logistic function 1 / (1 + exp(-z)), without clipping and without overflow warnings.

    For z < -709 exp(-z) overflows to inf and the quotient is 0, the correctly rounded value
    (the true one is below 1e-308); elsewhere the formula keeps full relative precision in both
    tails. It is the textbook expression, so results match code written with it bit for bit.
    """
    with np.errstate(over="ignore"):
        e = np.exp(np.negative(z), out=out)
    e += 1.0
    return np.divide(1.0, e, out=e)


def _sigmoid_grad(a: Array, out: Array | None = None) -> Array:
    out = np.subtract(1.0, a, out=out)
    out *= a
    return out


def _tanh(z: Array, out: Array | None = None) -> Array:
    return np.tanh(z, out=out)


def _tanh_grad(a: Array, out: Array | None = None) -> Array:
    out = np.multiply(a, a, out=out)
    np.subtract(1.0, out, out=out)
    return out


def _relu(z: Array, out: Array | None = None) -> Array:
    return np.maximum(z, 0.0, out=out)


def _relu_grad(a: Array, out: Array | None = None) -> Array:
    # a > 0 exactly where z > 0; the subgradient at z == 0 is 0, as in the notebook and PyTorch.
    if out is None:
        return (a > 0).astype(a.dtype)
    return np.greater(a, 0.0, out=out)


LEAKY_SLOPE = 0.01


def _leaky_relu(z: Array, out: Array | None = None) -> Array:
    result = np.where(z > 0, z, LEAKY_SLOPE * z)
    if out is None:
        return result
    np.copyto(out, result)
    return out


def _leaky_relu_grad(a: Array, out: Array | None = None) -> Array:
    result = np.where(a > 0, 1.0, LEAKY_SLOPE).astype(a.dtype, copy=False)
    if out is None:
        return result
    np.copyto(out, result)
    return out


def _softsign(z: Array, out: Array | None = None) -> Array:
    return np.divide(z, 1.0 + np.abs(z), out=out)


def _softsign_grad(a: Array, out: Array | None = None) -> Array:
    # softsign'(z) = 1 / (1 + |z|)^2 = (1 - |a|)^2, since |a| = |z| / (1 + |z|).
    out = np.abs(a, out=out)
    np.subtract(1.0, out, out=out)
    out *= out
    return out


def _identity(z: Array, out: Array | None = None) -> Array:
    if out is None:
        return z.copy()
    np.copyto(out, z)
    return out


def _identity_grad(a: Array, out: Array | None = None) -> Array:
    if out is None:
        return np.ones_like(a)
    out.fill(1.0)
    return out


@dataclass(frozen=True)
class Activation:
    """An element-wise activation ``a = fn(z)`` with derivative ``f'(z) = grad(a)``, and all the
    rest of the project knows about it: adding one to ``ACTIVATIONS`` is the only edit needed.

    Every derivative here is a function of the output a alone, so the network can apply the
    activation in place and still backpropagate; ``out`` lets callers reuse buffers.

    ``linear_gain`` is E[f'(z)^2] for z near 0 (theory.py's linear-regime factor),
    ``default_init`` the initializer ``init=auto`` picks for it, ``display_rank`` its place in
    figures' legends (saturating activations first). Mean-field theory (theory.py) needs f and
    f' as functions of the pre-activation z: ``fn`` and :meth:`derivative` give them, so a new
    entry gets the mean-field predictions with nothing else to write.
    """

    name: str
    fn: Callable[..., Array]
    grad: Callable[..., Array]
    max_derivative: float
    formula: str
    linear_gain: float
    default_init: str
    display_rank: int

    def __call__(self, z: Array, out: Array | None = None) -> Array:
        return self.fn(z, out=out)

    def derivative(self, z: Array) -> Array:
        """f'(z) for pre-activations z of any shape (a new array): ``grad(fn(z))``."""
        return self.grad(self.fn(np.asarray(z, dtype=float)))

    def __repr__(self) -> str:
        return f"Activation({self.name}: {self.formula})"


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("sigmoid", sigmoid, _sigmoid_grad, 0.25, "1/(1+exp(-z)), f' = a(1-a)",
                   linear_gain=0.25**2, default_init="lecun", display_rank=0),
        Activation("tanh", _tanh, _tanh_grad, 1.0, "tanh(z), f' = 1-a^2",
                   linear_gain=1.0, default_init="lecun", display_rank=1),
        # Half of the units pass the gradient near z = 0.
        Activation("relu", _relu, _relu_grad, 1.0, "max(z, 0), f' = [z>0]",
                   linear_gain=0.5, default_init="he", display_rank=4),
        Activation("leaky_relu", _leaky_relu, _leaky_relu_grad, 1.0,
                   f"z if z>0 else {LEAKY_SLOPE}z, f' = 1 or {LEAKY_SLOPE}",
                   linear_gain=(1.0 + LEAKY_SLOPE**2) / 2.0, default_init="he", display_rank=5),
        Activation("softsign", _softsign, _softsign_grad, 1.0, "z/(1+|z|), f' = 1/(1+|z|)^2",
                   linear_gain=1.0, default_init="lecun", display_rank=2),
        Activation("identity", _identity, _identity_grad, 1.0, "z, f' = 1",
                   linear_gain=1.0, default_init="lecun", display_rank=3),
    )
}


def get_activation(name: str) -> Activation:
    """Look an activation up by name; a ValueError names the bad value and the valid choices."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; valid choices: {', '.join(ACTIVATIONS)}"
        ) from None
