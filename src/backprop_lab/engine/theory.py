"""What theory predicts for signal and gradient flow at initialization.

Two predictions of the per-layer factor of ``delta_std`` (going one layer down, from layer l+1
to layer l), both for any activation of ``activations.ACTIVATIONS`` and any initializer:

**Linear regime** (Glorot & Bengio 2010; He et al. 2015), for small pre-activations:

    Var(delta^l) / Var(delta^{l+1}) = n_{l+1} Var(W^{l+1}) E[f'(0)^2]

(:func:`backprop_std_factor`; the registry's ``linear_gain`` is f'(0)^2). For equal widths:
tanh + standard init 0.577, sigmoid + standard 0.144, relu + xavier_uniform 0.707, relu + he 1.

**Mean field** (Poole et al. 2016; Schoenholz et al. 2017), exact for wide networks: with
sigma_w^2 = fan_in Var(W) and bias variance sigma_b^2, the pre-activation variance of layer l
(over units, samples and weight draws) follows the variance map from the data's input second
moment q^0 = mean over features and samples of x^2:

    q^1 = sigma_w^2 q^0 + sigma_b^2
    q^l = sigma_w^2 E_z[f(sqrt(q^{l-1}) z)^2] + sigma_b^2,      z ~ N(0, 1)

and the back-propagated error's variance changes, going down from layer l+1 to layer l, by

    chi^l = n_{l+1} Var(W^{l+1}) E_z[f'(sqrt(q^l) z)^2]

(= sigma_w^2 E[f'^2] for equal widths); its square root is the per-layer factor of ``delta_std``.
The map's fixed point q* (the limit reached from q^0), chi_1 = sigma_w^2 E[f'(sqrt(q*) z)^2] at
it and the depth scale xi = -1/ln(chi_1) summarize a deep network: the gradient's variance
changes by a factor e every xi layers (shrinks for xi > 0, grows for xi < 0; xi = inf at
criticality, chi_1 = 1).

Expectations over z ~ N(0, 1) are Gaussian quadratures split at z = 0: Gauss-Legendre with
:data:`QUAD_POINTS` nodes on each half-line, cut at |z| = 12 (beyond it the density is below
1e-31), weighted by the normal density. One Gauss-Hermite rule over the whole line was tried
first: it is exact for smooth integrands but loses 2.8% with 200 nodes on softsign's
E[f'(z)^2] = E[(1 + |z|)^-4], whose kink at z = 0 (as relu's jump) it cannot resolve (and
numpy's Hermite nodes overflow beyond about 300); split at the kink, every activation here is
smooth on each half and the rule is exact to about 1e-13. An activation with a kink away
from z = 0 (hardtanh at |z| = 1) would lose percents the same way: split there too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backprop_lab.engine.activations import Activation, get_activation
from backprop_lab.engine.initializers import resolve_init, weight_variance

QUAD_POINTS = 100  # per half-line
Z_CUT = 12.0
#: q below which a variance counts as 0 (and is evaluated at this value: f'(sqrt(q) z) -> f'(0))
Q_TINY = 1e-300
#: q above which the variance map is taken to diverge (q* = inf)
Q_HUGE = 1e12


def _nodes(points: int = QUAD_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z_i (2 points,) and weights w_i with sum_i w_i g(z_i) ~ E[g(z)], z ~ N(0, 1):
    Gauss-Legendre on [0, Z_CUT] and its mirror image, times the normal density."""
    x, w = np.polynomial.legendre.leggauss(points)
    half = (x + 1.0) * (Z_CUT / 2.0)
    weights = w * (Z_CUT / 2.0) * np.exp(-0.5 * half**2) / math.sqrt(2.0 * math.pi)
    return np.concatenate([-half[::-1], half]), np.concatenate([weights[::-1], weights])


_Z, _W = _nodes()


def gaussian_expectation(g, q: float | np.ndarray) -> float | np.ndarray:
    """E_z[g(sqrt(q) z)], z ~ N(0, 1), by the split quadrature above; q scalar or (k,) array."""
    q_arr = np.maximum(np.asarray(q, dtype=float), Q_TINY)
    values = g(np.sqrt(q_arr)[..., None] * _Z)  # (..., QUAD_POINTS)
    return values @ _W


def second_moment(activation: str | Activation, q: float | np.ndarray) -> float | np.ndarray:
    """E[f(sqrt(q) z)^2]: what a layer of pre-activation variance q passes on."""
    act = get_activation(activation) if isinstance(activation, str) else activation
    return gaussian_expectation(lambda u: act.fn(u) ** 2, q)


def derivative_moment(activation: str | Activation, q: float | np.ndarray) -> float | np.ndarray:
    """E[f'(sqrt(q) z)^2]: how much of the error a layer of pre-activation variance q passes."""
    act = get_activation(activation) if isinstance(activation, str) else activation
    return gaussian_expectation(lambda u: act.derivative(u) ** 2, q)


def sigma_w2(init: str, fan_in: int, fan_out: int, activation: str = "tanh") -> float:
    """sigma_w^2 = fan_in Var(W) of an initializer (``auto`` resolved for ``activation``)."""
    return fan_in * weight_variance(resolve_init(activation, init), fan_in, fan_out)


def backprop_std_factor(activation: str, init: str, fan_in: int, fan_out: int) -> float:
    """Linear-regime prediction of delta_std(layer l) / delta_std(layer l+1) at initialization.

    Args:
        activation: hidden activation of layer l.
        init: initializer of W^{l+1} (``auto`` is resolved for the activation).
        fan_in: n_l, the width of layer l (the fan-in of W^{l+1}).
        fan_out: n_{l+1}, the width of layer l+1 (the fan-out of W^{l+1}).
    """
    gain = get_activation(activation).linear_gain  # a ValueError for an unknown name
    var_w = weight_variance(resolve_init(activation, init), fan_in, fan_out)
    return math.sqrt(fan_out * var_w * gain)


@dataclass(frozen=True)
class MeanField:
    """Mean-field predictions for a network of layer widths ``sizes`` (n_0, ..., n_L).

    ``q`` (L,): pre-activation variance q^l of weight layers l = 1..L (the last: the output
    logits). ``chi`` (L-1,): element l-1 is Var(delta^l) / Var(delta^{l+1}) for l = 1..L-1,
    and ``std_factors`` its square root, the per-layer factor of ``delta_std``;
    ``linear_factors`` (L-1,) the linear-regime factors of the same steps.
    """

    activation: str
    init: str
    sizes: tuple[int, ...]
    input_var: float
    sigma_b2: float
    q: np.ndarray
    chi: np.ndarray
    linear_factors: np.ndarray

    @property
    def std_factors(self) -> np.ndarray:
        return np.sqrt(self.chi)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1


def mean_field(activation: str, init: str, sizes: Sequence[int], input_var: float = 1.0,
               sigma_b2: float = 0.0) -> MeanField:
    """Layer-by-layer variance map and gradient factors of a network at initialization.

    Args:
        activation: hidden activation (all hidden layers).
        init: initializer name (``auto`` resolved for the activation).
        sizes: layer widths n_0 (input), n_1, ..., n_L (output); at least one hidden layer.
        input_var: q^0, the data's mean squared input over features and samples (1 for
            standardized data without constant features).
        sigma_b2: variance of the biases (0: this project starts biases at zero).
    """
    act = get_activation(activation)
    init = resolve_init(activation, init)
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 3:
        raise ValueError(f"sizes needs an input, a hidden and an output width; got {sizes}")
    if not input_var >= 0 or not sigma_b2 >= 0:
        raise ValueError(f"input_var and sigma_b2 must be >= 0; got {input_var}, {sigma_b2}")
    L = len(sizes) - 1
    fans = list(zip(sizes[:-1], sizes[1:]))
    s2 = [sigma_w2(init, i, o, activation) for i, o in fans]
    q = np.empty(L)
    q[0] = s2[0] * input_var + sigma_b2
    for l in range(1, L):
        q[l] = s2[l] * second_moment(act, q[l - 1]) + sigma_b2
    # chi[l-1]: from layer l+1 down to layer l (1-based), through f' of layer l's q.
    chi = np.array([o * weight_variance(init, i, o) * derivative_moment(act, q[l - 1])
                    for l, (i, o) in enumerate(fans[1:], start=1)])
    linear = np.array([backprop_std_factor(activation, init, i, o) for i, o in fans[1:]])
    return MeanField(act.name, init, sizes, float(input_var), float(sigma_b2), q, chi, linear)


def variance_map(activation: str, s2: float, q: float | np.ndarray,
                 sigma_b2: float = 0.0) -> float | np.ndarray:
    """V(q) = sigma_w^2 E[f(sqrt(q) z)^2] + sigma_b^2: one layer of the variance map."""
    return s2 * second_moment(activation, q) + sigma_b2


def fixed_point(activation: str, s2: float, q0: float = 1.0, sigma_b2: float = 0.0) -> float:
    """q*, the limit of q^{l+1} = V(q^l) from q^0 = ``q0`` (0 or inf when it gets there).

    V is increasing, so the sequence is monotone: up to the first fixed point above q0 when
    V(q0) > q0, down to the last one below it when V(q0) < q0; found on a log grid and refined
    by bisection. When V(q0) = q0 (relu with he init: every q is fixed) q* = q0.
    """
    def gap(q):
        return variance_map(activation, s2, q, sigma_b2) - q

    g0 = float(gap(q0))
    if abs(g0) <= 1e-10 * max(q0, 1e-12):
        return float(q0)
    up = g0 > 0
    grid = (np.geomspace(q0, Q_HUGE, 400) if up
            else np.concatenate([np.geomspace(q0, 1e-12, 400), [0.0]]))
    values = gap(grid)
    crossed = np.flatnonzero(values <= 0) if up else np.flatnonzero(values >= 0)
    if crossed.size == 0:
        return math.inf if up else 0.0
    k = int(crossed[0])
    a, b = float(grid[k - 1]), float(grid[k])
    for _ in range(200):
        mid = 0.5 * (a + b)
        if (float(gap(mid)) > 0) == up:
            a = mid
        else:
            b = mid
        if abs(b - a) <= 1e-14 * max(abs(a), abs(b), 1e-300):
            break
    result = 0.5 * (a + b)
    return 0.0 if result < 1e-11 and not up else result


@dataclass(frozen=True)
class DepthScale:
    """q* (fixed point), chi_1 at it and xi = -1/ln(chi_1) for one activation and sigma_w^2."""

    q_star: float
    chi_1: float
    xi: float


def depth_scale(activation: str, init: str, width: int = 512, q0: float = 1.0,
                sigma_b2: float = 0.0) -> DepthScale:
    """q*, chi_1 = sigma_w^2 E[f'(sqrt(q*) z)^2] and xi = -1/ln(chi_1) for a deep network of
    equal widths ``width`` (sigma_w^2 = width Var(W)), starting from input variance q0."""
    s2 = sigma_w2(init, width, width, activation)
    q_star = fixed_point(activation, s2, q0, sigma_b2)
    q_eval = min(q_star, Q_HUGE)  # homogeneous activations (relu): chi does not depend on q
    chi_1 = float(s2 * derivative_moment(activation, q_eval))
    if math.isclose(chi_1, 1.0, rel_tol=1e-12, abs_tol=0.0):
        xi = math.inf
    else:
        xi = -1.0 / math.log(chi_1) if chi_1 > 0 else 0.0
    return DepthScale(q_star, chi_1, xi)


__all__ = [
    "anchored",
    "DepthScale",
    "MeanField",
    "backprop_std_factor",
    "depth_scale",
    "derivative_moment",
    "fixed_point",
    "gaussian_expectation",
    "mean_field",
    "resolve_init",
    "second_moment",
    "sigma_w2",
    "variance_map",
]


def anchored(anchor: float, factors: np.ndarray, layers: np.ndarray) -> np.ndarray:
    """Predicted value(l) = anchor * prod_{k=l}^{L-2} factors[k-1] for the layers l <= L-1
    (``factors`` (L-2,): the hidden steps; layer L-1 gets the anchor, the output layer NaN)."""
    top = factors.size + 1
    down = np.r_[np.cumprod(factors[::-1])[::-1], 1.0]  # (L-1,): layers 1..L-1
    return np.array([anchor * down[l - 1] if l <= top else np.nan for l in layers])
