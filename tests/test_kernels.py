"""The diagnostics' fused per-unit sums (kernels.py): the compiled loop against numpy and against
the definitions, including NaN, inf, float32 and the output layer's slope."""

import numpy as np
import pytest

from backprop_lab import kernels
from backprop_lab.losses import OUTPUTS, get_output

needs_numba = pytest.mark.skipif(kernels.compiled() is None,
                                 reason="numba is not installed (or BACKPROP_LAB_NUMBA=0)")


def direct(D, A, F, threshold, slope, scale):
    """The sums by their definitions, in float64."""
    D, A, F = (np.asarray(x, dtype=np.float64) for x in (D, A, F))
    h = F.shape[0]
    c0, c1, c2 = slope
    s = np.vstack([F, scale * (c0 + A[h:] * (c1 + c2 * A[h:]))])
    return (D**2).sum(1), (A**2).sum(1), A.sum(1), (s < threshold).sum(1).astype(float)


def run(impl, D, A, F, threshold, slope, scale):
    n = A.shape[0]
    out = [np.full(n, -1.0, dtype=A.dtype) for _ in range(4)]
    impl(D, A, F.copy(), threshold, slope, scale, *out)
    return out


def batch(rng, n, h, m, dtype=np.float64):
    D = rng.normal(size=(n, m)).astype(dtype)
    A = rng.random((n, m)).astype(dtype)
    F = rng.random((h, m)).astype(dtype)
    return D, A, F


@pytest.mark.parametrize("impl", [
    pytest.param(lambda *a: kernels.compiled()(*a), marks=needs_numba, id="numba"),
    pytest.param(kernels.unit_sums_numpy, id="numpy"),
])
@pytest.mark.parametrize(("n", "h", "m"), [(25, 24, 400), (7, 7, 3), (3, 0, 129), (1, 0, 1)])
@pytest.mark.parametrize("head", sorted(OUTPUTS))
def test_unit_sums_match_the_definitions(impl, n, h, m, head) -> None:
    rng = np.random.default_rng(n * 1000 + m)
    D, A, F = batch(rng, n, h, m)
    slope = get_output(head).slope
    got = run(impl, D, A, F, 0.05, slope, 4.0)
    want = direct(D, A, F, 0.05, slope, 4.0)
    for name, g, w in zip(("d_sq", "a_sq", "a_sum", "n_sat"), got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=name)


@needs_numba
def test_compiled_loop_agrees_with_numpy_in_float32_and_with_nan_and_inf() -> None:
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        D, A, F = batch(rng, 9, 6, 257, dtype)
        D[0, 5] = np.inf
        A[1, 7] = np.nan
        F[2, :10] = np.nan  # NaN is below nothing
        F[3, :4] = 0.0
        A[7:, :3] = (np.nan, 0.0, 1.0)  # the output rows: p(1-p) of 0 and 1 is 0, saturated
        args = (D, A, F, 0.05, (0.0, 1.0, -1.0), 4.0)
        fused, plain = run(kernels.compiled(), *args), run(kernels.unit_sums_numpy, *args)
        for name, f, p in zip(("d_sq", "a_sq", "a_sum", "n_sat"), fused, plain):
            assert f.dtype == dtype
            np.testing.assert_allclose(f, p, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                       err_msg=f"{name}, {np.dtype(dtype).name}")
        assert np.isinf(fused[0][0]) and np.isnan(fused[1][1]) and np.isnan(fused[2][1])
        assert fused[3][2] == np.count_nonzero(F[2] < 0.05)


@pytest.mark.parametrize("head", sorted(OUTPUTS))
def test_output_slope_coefficients_are_the_heads_derivative(head) -> None:
    out = get_output(head)
    p = np.linspace(0.0, 1.0, 101)[None, :]
    c0, c1, c2 = out.slope
    np.testing.assert_array_equal(c0 + p * (c1 + c2 * p), out.derivative(p))
