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
The map's fixed point q* (the limit reached from q^0) and chi_1 = sigma_w^2 E[f'(sqrt(q*) z)^2]
at it summarize a deep network: the gradient's variance changes by chi_1 a layer, a factor e
every xi_grad = -1/ln(chi_1) layers (shrinks for xi_grad > 0, grows for xi_grad < 0).

**Depth scales** (Schoenholz et al. 2017, "Deep information propagation"), :func:`depth_scale`.
Two inputs whose pre-activations have correlation c^l move, layer by layer, by the correlation
map

    c^{l+1} = (sigma_w^2 E[f(u_1) f(u_2)] + sigma_b^2) / q*,
    u_1 = sqrt(q*) z_1,  u_2 = sqrt(q*) (c z_1 + sqrt(1 - c^2) z_2),  z_1, z_2 ~ N(0, 1),

whose slope at its stable fixed point c* is chi_c = sigma_w^2 E[f'(u_1) f'(u_2)]. c = 1 is
always fixed with slope chi_1: in the **ordered** phase (chi_1 < 1) it is stable, c* = 1 and
chi_c = chi_1; in the **chaotic** phase (chi_1 > 1) it repels and c* < 1 is the largest other
fixed point. The depth scales are xi_q = -1/ln(V'(q*)) (how fast q reaches q*) and
xi_c = -1/ln(chi_c) (how fast correlations reach c*: information about two inputs' difference
survives about xi_c layers; networks train when depth is below about 6 xi_c). xi_c is positive
on both sides and infinite at the order-to-chaos transition chi_1 = 1
(:func:`critical_sigma_w2`). In the chaotic phase xi_grad is negative and is not xi_c.
V'(q) = sigma_w^2 E[f(u) f'(u) z] / sqrt(q) (= chi_1 + sigma_w^2 E[f f''] by Stein's lemma).

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
from backprop_lab.engine.initializers import check_variances, resolve_init, weight_variance

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


def sigma_w2(init: str, fan_in: int, fan_out: int, activation: str = "tanh",
             s2: float | None = None) -> float:
    """sigma_w^2 = fan_in Var(W) of an initializer (``auto`` resolved for ``activation``);
    ``s2`` is the sigma_w^2 of ``gaussian`` and ``orthogonal`` (None: 1)."""
    return fan_in * weight_variance(resolve_init(activation, init), fan_in, fan_out, s2)


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


def mean_field(activation: str, init: str | None, sizes: Sequence[int], input_var: float = 1.0,
               sigma_b2: float = 0.0, sigma_w2: float | None = None) -> MeanField:
    """Layer-by-layer variance map and gradient factors of a network at initialization.

    Args:
        activation: hidden activation (all hidden layers).
        init: initializer name (``auto`` resolved for the activation); None with ``sigma_w2``:
            ``gaussian`` (``orthogonal`` has the same mean field).
        sizes: layer widths n_0 (input), n_1, ..., n_L (output); at least one hidden layer.
        input_var: q^0, the data's mean squared input over features and samples (1 for
            standardized data without constant features).
        sigma_b2: variance of the biases (``model.sigma_b2``; 0: zero biases).
        sigma_w2: sigma_w^2 of ``gaussian`` / ``orthogonal`` (None: 1).
    """
    act = get_activation(activation)
    init = resolve_init(activation, "gaussian" if init is None else init)
    s2_init, _ = check_variances(init, sigma_w2, 0.0)
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 3:
        raise ValueError(f"sizes needs an input, a hidden and an output width; got {sizes}")
    if not input_var >= 0 or not sigma_b2 >= 0:  # NaN fails too
        raise ValueError(f"input_var and sigma_b2 must be >= 0; got {input_var}, {sigma_b2}")
    L = len(sizes) - 1
    fans = list(zip(sizes[:-1], sizes[1:]))
    s2 = [fan_in * weight_variance(init, fan_in, fan_out, s2_init) for fan_in, fan_out in fans]
    q = np.empty(L)
    q[0] = s2[0] * input_var + sigma_b2
    for l in range(1, L):
        q[l] = s2[l] * second_moment(act, q[l - 1]) + sigma_b2
    # chi[l-1]: from layer l+1 down to layer l (1-based), through f' of layer l's q.
    chi = np.array([o * weight_variance(init, i, o, s2_init) * derivative_moment(act, q[l - 1])
                    for l, (i, o) in enumerate(fans[1:], start=1)])
    linear = np.array([math.sqrt(o * weight_variance(init, i, o, s2_init) * act.linear_gain)
                       for i, o in fans[1:]])
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


def variance_map_slope(activation: str, s2: float, q: float) -> float:
    """V'(q) = sigma_w^2 E[f(sqrt(q) z) f'(sqrt(q) z) z] / sqrt(q): the variance map's slope."""
    act = get_activation(activation)
    q = max(q, Q_TINY)  # u z / sqrt(q) = u^2 / q
    return float(s2 * gaussian_expectation(lambda u: act.fn(u) * act.derivative(u) * u, q) / q)


def _pair_expectation(g1, g2, q: float, c: float) -> float:
    """E[g1(u_1) g2(u_2)], (u_1, u_2) Gaussian of variances q and correlation c, by the
    product of the one-dimensional rule (QUAD_POINTS^2 4 nodes)."""
    root = math.sqrt(max(q, Q_TINY))
    u1 = root * _Z[:, None]
    u2 = root * (c * _Z[:, None] + math.sqrt(max(1.0 - c * c, 0.0)) * _Z[None, :])
    return float(_W @ (g1(u1) * g2(u2)) @ _W)


def correlation_map(activation: str, s2: float, q_star: float, c: float,
                    sigma_b2: float = 0.0) -> float:
    """C(c) = (sigma_w^2 E[f(u_1) f(u_2)] + sigma_b^2) / q*: one layer of the correlation map."""
    act = get_activation(activation)
    return (s2 * _pair_expectation(act.fn, act.fn, q_star, c) + sigma_b2) / q_star


def correlation_fixed_point(activation: str, s2: float, q_star: float, chi_1: float,
                            sigma_b2: float = 0.0) -> float:
    """c*: 1 in the ordered phase (chi_1 <= 1); in the chaotic phase the largest c < 1 with
    C(c) = c (C falls below the diagonal just under 1 there, as its slope at 1 is chi_1 > 1,
    and C(-1) >= -1), found on a grid and refined by bisection."""
    if chi_1 <= 1.0 or not math.isfinite(q_star) or q_star <= 0:
        return 1.0

    def gap(c: float) -> float:
        return correlation_map(activation, s2, q_star, c, sigma_b2) - c

    grid = np.linspace(-1.0, 1.0, 81)[:-1]
    values = np.array([gap(c) for c in grid])
    above = np.flatnonzero(values >= 0)
    if above.size == 0:
        return -1.0
    k = int(above[-1])
    if k == grid.size - 1:  # C(c) > c up to the grid's last point: look between it and 1
        a, b = float(grid[k]), 1.0 - 1e-9
        if gap(b) >= 0:
            return 1.0
    else:
        a, b = float(grid[k]), float(grid[k + 1])
    for _ in range(60):
        mid = 0.5 * (a + b)
        if gap(mid) >= 0:
            a = mid
        else:
            b = mid
    return 0.5 * (a + b)


def _depth(slope: float) -> float:
    """-1/ln(slope): inf at slope 1, 0 at slope 0."""
    if math.isclose(slope, 1.0, rel_tol=1e-12, abs_tol=0.0):
        return math.inf
    return -1.0 / math.log(slope) if slope > 0 else 0.0


@dataclass(frozen=True)
class DepthScale:
    """Mean-field summary of a deep network of one activation, sigma_w^2 and sigma_b^2.

    ``q_star`` the variance map's fixed point; ``c_star`` the correlation map's (1 in the ordered
    phase); ``chi_1`` = sigma_w^2 E[f'(sqrt(q*) z)^2] (the gradient's variance factor a layer);
    ``chi_c`` = sigma_w^2 E[f'(u_1) f'(u_2)] at c* (the correlation map's slope there);
    ``xi_q`` = -1/ln V'(q*), ``xi_c`` = -1/ln chi_c (Schoenholz et al. 2017, both > 0, inf at
    criticality); ``xi_grad`` = -1/ln chi_1 (the gradient's depth scale: negative when it grows,
    equal to xi_c in the ordered phase only). ``phase``: ordered, critical or chaotic.
    """

    sigma_w2: float
    sigma_b2: float
    q_star: float
    c_star: float
    chi_1: float
    chi_c: float
    xi_q: float
    xi_c: float
    xi_grad: float

    @property
    def phase(self) -> str:
        if math.isclose(self.chi_1, 1.0, rel_tol=1e-9):
            return "critical"
        return "ordered" if self.chi_1 < 1.0 else "chaotic"

    @property
    def xi(self) -> float:
        """Old name of ``xi_grad`` (-1/ln chi_1), kept for existing callers."""
        return self.xi_grad


def depth_scale(activation: str, init: str | None = None, width: int = 512, q0: float = 1.0,
                sigma_b2: float = 0.0, *, sigma_w2: float | None = None) -> DepthScale:
    """q*, c*, chi_1, chi_c, xi_q, xi_c (and xi_grad) of a deep network of equal widths.

    Either ``init`` (a named initializer: sigma_w^2 = width Var(W); ``auto`` resolved for the
    activation) or ``sigma_w2`` (``init`` None, ``gaussian`` or ``orthogonal``);
    ``sigma_b2`` the bias variance; q0 the input's variance the map starts from (the fixed
    point of tanh with sigma_b^2 > 0 does not depend on it).

    >>> round(depth_scale("tanh", sigma_w2=2.0, sigma_b2=0.05).xi_c, 1)
    25.2
    """
    init = resolve_init(activation, "gaussian" if init is None else init)
    s2_init, sigma_b2 = check_variances(init, sigma_w2, sigma_b2)
    s2 = width * weight_variance(init, width, width, s2_init)
    q_star = fixed_point(activation, s2, q0, sigma_b2)
    q_eval = min(q_star, Q_HUGE)  # homogeneous activations (relu): chi does not depend on q
    chi_1 = float(s2 * derivative_moment(activation, q_eval))
    c_star = correlation_fixed_point(activation, s2, q_star, chi_1, sigma_b2)
    if c_star >= 1.0:
        chi_c = chi_1
    else:
        act = get_activation(activation)
        chi_c = s2 * _pair_expectation(act.derivative, act.derivative, q_star, c_star)
    slope_q = variance_map_slope(activation, s2, q_eval) if q_star > 0 else chi_1
    return DepthScale(sigma_w2=s2, sigma_b2=sigma_b2, q_star=q_star, c_star=c_star,
                      chi_1=chi_1, chi_c=chi_c, xi_q=_depth(slope_q), xi_c=_depth(chi_c),
                      xi_grad=_depth(chi_1))


def critical_sigma_w2(activation: str, sigma_b2: float = 0.0, q0: float = 1.0,
                      low: float = 1e-2, high: float = 1e3) -> float:
    """The sigma_w^2 at which chi_1 = 1 for bias variance ``sigma_b2``: the order-to-chaos line
    (tanh: 1 at sigma_b^2 = 0, about 1.76 at 0.05). Bisection in log sigma_w^2 between ``low``
    and ``high``; a ValueError when chi_1 - 1 does not change sign there."""

    def excess(s2: float) -> float:
        q_star = min(fixed_point(activation, s2, q0, sigma_b2), Q_HUGE)
        return float(s2 * derivative_moment(activation, q_star)) - 1.0

    a, b = math.log(low), math.log(high)
    fa, fb = excess(low), excess(high)
    if fa * fb > 0:
        raise ValueError(f"chi_1 - 1 does not change sign for {activation} with sigma_b2="
                         f"{sigma_b2} between sigma_w2={low} ({fa:+.3g}) and {high} ({fb:+.3g})")
    for _ in range(80):
        mid = 0.5 * (a + b)
        fm = excess(math.exp(mid))
        if (fm > 0) == (fb > 0):
            b = mid
        else:
            a = mid
        if b - a < 1e-12:
            break
    return math.exp(0.5 * (a + b))


__all__ = [
    "anchored",
    "DepthScale",
    "MeanField",
    "backprop_std_factor",
    "correlation_fixed_point",
    "correlation_map",
    "critical_sigma_w2",
    "depth_scale",
    "derivative_moment",
    "fixed_point",
    "gaussian_expectation",
    "mean_field",
    "resolve_init",
    "second_moment",
    "sigma_w2",
    "variance_map",
    "variance_map_slope",
]


def anchored(anchor: float, factors: np.ndarray, layers: np.ndarray) -> np.ndarray:
    """Predicted value(l) = anchor * prod_{k=l}^{L-2} factors[k-1] for the layers l <= L-1
    (``factors`` (L-2,): the hidden steps; layer L-1 gets the anchor, the output layer NaN)."""
    top = factors.size + 1
    down = np.r_[np.cumprod(factors[::-1])[::-1], 1.0]  # (L-1,): layers 1..L-1
    return np.array([anchor * down[l - 1] if l <= top else np.nan for l in layers])
