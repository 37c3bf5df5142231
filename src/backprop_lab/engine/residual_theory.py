"""Mean-field theory of residual networks at initialization (Yang & Schoenholz 2017, "Mean Field
Residual Networks: On the Edge of Chaos"), for the blocks of blocks.py without normalization:

    z^l = W^l a^{l-1} + b^l,    a^l = a^{l-1} + alpha f(z^l)    (hidden layers 2..L-1)

Forward, with sigma_w^2 = fan_in Var(W), q^l the pre-activation variance and p^l, mu^l the
second moment and the mean of a layer's output (over units, samples and weight draws):

    q^l = sigma_w^2 p^{l-1} + sigma_b^2        (q^1 = sigma_w^2 q^0 + sigma_b^2, q^0 the input's)
    p^l = p^{l-1} + alpha^2 E[f(z)^2] + 2 alpha mu^{l-1} E[f(z)],   mu^l = mu^{l-1} + alpha E[f(z)]

(z ~ N(0, q^l); a plain layer has p^l = E[f(z)^2], mu^l = E[f(z)]); the cross term uses that a
unit of a^{l-1} and the pre-activation z^l, a sum over all n units, are independent in the
wide limit. Backward, with g^l = dL/da^l and the gradient-independence assumption (W^l and W^l^T
independent, as in the plain theory of theory.py), the skip path adds the error of the layer
above to what W^T brings down, and the cross term has mean 0:

    E[(g^{l-1})^2] = n_l Var(W^l) E[(delta^l)^2] + E[(g^l)^2]    (the last term: l residual)
    E[(delta^l)^2] = s_l^2 E[f'(z^l)^2] E[(g^l)^2],   s_l = alpha (residual) or 1

so for equal widths a residual step multiplies the error's second moment by
1 + alpha^2 sigma_w^2 E[f'(z)^2] >= 1: the error never vanishes on the way down; with he init and
relu (sigma_w^2 E[f'^2] = 1) it grows by 1 + alpha^2 a layer (2^48 over 48 blocks at alpha = 1,
hence a small alpha at depth; (1 + 1/48)^48 = e at alpha^2 = 1/48).
``chi`` below has the layout of :class:`~backprop_lab.engine.theory.MeanField`'s: element
l-1 is Var(delta^l) / Var(delta^{l+1}) for l = 1..L-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backprop_lab.engine.activations import get_activation
from backprop_lab.engine.initializers import resolve_init, weight_variance
from backprop_lab.engine.theory import derivative_moment, gaussian_expectation, sigma_w2


@dataclass(frozen=True)
class ResidualMeanField:
    """``q`` (L,): pre-activation variance of weight layers 1..L; ``chi`` (L-1,): the
    per-layer ratio of Var(delta) (see the module docstring); ``std_factors`` its root."""

    activation: str
    init: str
    sizes: tuple[int, ...]
    residual_scale: float
    q: np.ndarray
    chi: np.ndarray

    @property
    def std_factors(self) -> np.ndarray:
        return np.sqrt(self.chi)


def residual_mean_field(activation: str, init: str, sizes: Sequence[int],
                        residual_scale: float = 1.0, input_var: float = 1.0,
                        sigma_b2: float = 0.0) -> ResidualMeanField:
    """Variance map and delta factors of a residual network of layer widths ``sizes`` (n_0, the
    hidden widths, all equal, and n_L) at initialization, as BlockMLP(residual=True) builds it.
    """
    act = get_activation(activation)
    init = resolve_init(activation, init)
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 4 or len(set(sizes[1:-1])) > 1:
        raise ValueError(f"a residual network needs at least two hidden layers of equal width; "
                         f"got layer widths {sizes}")
    alpha = float(residual_scale)
    L = len(sizes) - 1
    fans = list(zip(sizes[:-1], sizes[1:]))
    s2 = [sigma_w2(init, i, o, activation) for i, o in fans]
    residual = [1 <= l < L - 1 for l in range(L)]
    q = np.empty(L)
    q[0] = s2[0] * input_var + sigma_b2
    p = mu = 0.0
    for l in range(L):
        if l > 0:
            q[l] = s2[l] * p + sigma_b2
        if l == L - 1:
            break
        mean_f = float(gaussian_expectation(act.fn, q[l]))
        mean_f2 = float(gaussian_expectation(lambda u: act.fn(u) ** 2, q[l]))
        if residual[l]:
            p = p + alpha**2 * mean_f2 + 2 * alpha * mu * mean_f
            mu = mu + alpha * mean_f
        else:
            p, mu = mean_f2, mean_f
    d2 = np.array([float(derivative_moment(act, q[l])) for l in range(L - 1)])
    var_delta = np.empty(L)
    var_delta[L - 1] = 1.0
    g2 = 0.0  # E[(g^k)^2] of the layer above the one being processed
    for k in range(L - 2, -1, -1):
        fan_in, fan_out = fans[k + 1]
        brought_down = fan_out * weight_variance(init, fan_in, fan_out) * var_delta[k + 1]
        g2 = brought_down + (g2 if residual[k + 1] else 0.0)
        scale = alpha**2 if residual[k] else 1.0
        var_delta[k] = scale * d2[k] * g2
    chi = var_delta[:-1] / var_delta[1:]
    return ResidualMeanField(act.name, init, sizes, alpha, q, chi)
