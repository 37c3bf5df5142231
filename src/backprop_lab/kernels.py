"""The diagnostics' per-unit reductions of a probe pass, fused into one compiled loop.

For errors D (n, m), activations A (n, m) and derivatives F (h, m) of the first h <= n rows, from
one probe pass over m samples, ``unit_sums`` fills for every unit (row) i:

    d_sq[i]  = sum_j D[i, j]^2                     (n,)
    a_sq[i]  = sum_j A[i, j]^2                     (n,)
    a_sum[i] = sum_j A[i, j]                       (n,)
    n_sat[i] = #{j : s[i, j] < threshold}          (n,)

with s = F for the first h rows, and for the other rows (the output layer, whose slope backward
never forms) s = scale * (c0 + p (c1 + c2 p)), p = A[i, j], from ``slope = (c0, c1, c2)``: the
output's dp/dz as a polynomial in p (see ``losses.OutputHead.slope``). NaN is below nothing.

The engine itself is numpy. These sums are the one place where numpy's cost per call (1-4 us
whatever the size) dominates a small network's epoch: in numpy they take about six whole-array
operations, each reading its rows again. With numba (a dependency of the package) one loop reads
every value once, accumulates in float64 and counts in integers. The sums may differ from
numpy's in the last bits (the loop's additions are reassociated for SIMD; NaN and inf keep their
IEEE meaning), the counts are the same. Without numba, or with ``BACKPROP_LAB_NUMBA=0`` in the
environment, the numpy version is used; the tests run both.

Compiled code is cached next to this file (numba's ``cache=True`` writes a temporary file and
moves it into place, so parallel workers can share it); the first call in a process without a
cache compiles for about a second.
"""

from __future__ import annotations

import os

import numpy as np

Array = np.ndarray
Slope = tuple[float, float, float]


def unit_sums_numpy(
    D: Array, A: Array, F: Array, threshold: float, slope: Slope, scale: float,
    d_sq: Array, a_sq: Array, a_sum: Array, n_sat: Array,
) -> None:
    """``unit_sums`` in numpy calls. F is overwritten with its 0/1 indicators ``F < threshold``."""
    h, m = F.shape[0], A.shape[1]
    ones = np.ones(m, dtype=A.dtype)
    np.vecdot(D, D, out=d_sq)
    np.vecdot(A, A, out=a_sq)
    np.matmul(A, ones, out=a_sum)
    np.less(F, threshold, out=F)
    np.matmul(F, ones, out=n_sat[:h])
    if h < A.shape[0]:
        c0, c1, c2 = slope
        p = A[h:]
        s = c2 * p  # the same operations, in the same order, as the compiled loop
        s += c1
        s *= p
        s += c0
        s *= scale
        np.sum(s < threshold, axis=1, out=n_sat[h:], dtype=n_sat.dtype)


def _count_below_slope(p, c0, c1, c2, scale, threshold):  # pragma: no cover (compiled)
    c = 0
    for j in range(p.shape[0]):
        x = np.float64(p[j])
        if (c0 + x * (c1 + c2 * x)) * scale < threshold:
            c += 1
    return c


def _unit_sums_loop(D, A, F, threshold, slope, scale, d_sq, a_sq, a_sum, n_sat):  # pragma: no cover
    n, m = A.shape
    h = F.shape[0]
    for i in range(n):
        s = 0.0
        for j in range(m):
            x = np.float64(D[i, j])
            s += x * x
        d_sq[i] = s
        s = 0.0
        s2 = 0.0
        for j in range(m):
            x = np.float64(A[i, j])
            s += x
            s2 += x * x
        a_sum[i] = s
        a_sq[i] = s2
    for i in range(h):
        c = 0
        for j in range(m):
            if F[i, j] < threshold:
                c += 1
        n_sat[i] = c
    c0, c1, c2 = slope
    for i in range(h, n):
        n_sat[i] = _count_below(A[i], c0, c1, c2, scale, threshold)


def _compile():
    if os.environ.get("BACKPROP_LAB_NUMBA", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    try:
        import numba
    except ImportError:
        return None
    global _count_below
    # The slope is evaluated without fast-math, exactly as the numpy version does; the sums
    # only allow reassociation (so that they vectorize), so NaN and inf keep their meaning.
    _count_below = numba.njit(cache=True, nogil=True)(_count_below_slope)
    return numba.njit(cache=True, nogil=True, fastmath={"reassoc"})(_unit_sums_loop)


_count_below = _count_below_slope
_loaded: dict[str, object] = {}


def compiled():
    """The compiled ``unit_sums`` loop (numba is imported on the first call, not at import), or
    None when the numpy backend is in use."""
    if "loop" not in _loaded:
        _loaded["loop"] = _compile()
    return _loaded["loop"]


def backend() -> str:
    """Which implementation ``unit_sums`` uses: ``"numba"`` or ``"numpy"``."""
    return "numpy" if compiled() is None else "numba"


def unit_sums_impl():
    """The function ``unit_sums`` calls: the compiled loop or ``unit_sums_numpy`` (callers in
    hot loops take it once)."""
    loop = compiled()
    return unit_sums_numpy if loop is None else loop


def warm_up(dtype: np.dtype | type) -> None:
    """Load (or compile) the loop for arrays of ``dtype`` now: numba's runtime takes about
    0.5 s and 150 MB of resident memory the first time a process calls it."""
    loop = compiled()
    if loop is not None:
        z, o = np.zeros((1, 1), dtype=dtype), np.zeros(1, dtype=dtype)
        loop(z, z, z, 0.0, (0.0, 1.0, -1.0), 1.0, o, o, o, o)


def unit_sums(
    D: Array, A: Array, F: Array, threshold: float, slope: Slope, scale: float,
    d_sq: Array, a_sq: Array, a_sum: Array, n_sat: Array,
) -> None:
    """Per unit: sums of squared errors, of activations and of their squares, and the number of
    samples whose slope is below ``threshold`` (see the module docstring). Arrays C-contiguous;
    F may be overwritten."""
    unit_sums_impl()(D, A, F, threshold, slope, scale, d_sq, a_sq, a_sum, n_sat)
