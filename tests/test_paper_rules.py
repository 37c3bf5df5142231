"""The rules that decide the papers' claims, on made-up data where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backprop_lab.analysis.papers import dynamical_isometry as di
from backprop_lab.analysis.papers import schoenholz_depth_scale as sds
from backprop_lab.analysis.papers.common import decide, difference, spearman_p


def test_difference_and_decide_account_for_the_spread() -> None:
    diff, se = difference([2.0, 2.2, 1.8], [1.0, 1.1, 0.9])
    assert diff == pytest.approx(1.0) and se == pytest.approx(math.sqrt(0.04 / 3 + 0.01 / 3))
    assert decide(diff, se) is True and decide(-diff, se) is False
    # Means 0.1 apart with a spread of 0.9 over seeds: the data cannot tell.
    assert decide(*difference([1.2, 2.1, 0.3], [1.1, 0.2, 2.0])) is None
    assert decide(*difference([1.0], [0.0])) is None  # one seed: no error, no decision


def test_spearman_p_is_exact_over_permutations() -> None:
    rho, p = spearman_p([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert rho == pytest.approx(1.0) and p == pytest.approx(1 / 120)
    # rho = 1 - sum d^2 / 20 = 0.8: sum d^2 <= 4 in 8 of the 120 orderings (the identity, 4
    # adjacent swaps, 3 pairs of disjoint adjacent swaps)
    rho, p = spearman_p([1, 2, 3, 4, 5], [2, 1, 3, 5, 4])
    assert rho == pytest.approx(0.8) and p == pytest.approx(8 / 120)
    rho, p = spearman_p([1, 2, 3, 4, 5], [3, 1, 5, 2, 4])
    assert rho == pytest.approx(0.3) and p > 0.2
    # Ties (their Table 1 has two 1.64s) take average ranks.
    assert spearman_p([1.64, 1.72, 1.76, 1.64, 2.21], [1, 2, 3, 4, 5])[0] == pytest.approx(
        np.corrcoef([1.5, 3, 4, 1.5, 5], [1, 2, 3, 4, 5])[0, 1])


def test_sign_test_and_wilson() -> None:
    assert sds.sign_test(5, 0) == pytest.approx(1 / 32)
    assert sds.sign_test(4, 2) == pytest.approx(22 / 64)
    low, high = sds.wilson(8, 10)
    assert 0.44 < low < 0.5 and 0.94 < high < 0.98


def _cells(outcomes: dict[tuple[float, int], str]) -> pd.DataFrame:
    rows = []
    for (s2, depth), outcome in outcomes.items():
        xi = sds.xi_c_table([s2], 0.05)["6 xi_c"].iloc[0]
        rows.append({"sigma_w2": s2, "depth": depth, "seeds": 2, "outcome": outcome,
                     "6 xi_c": xi, "predicted": "trains" if depth < xi else "fails"})
    return pd.DataFrame(rows)


def test_schoenholz_claim_holds_only_when_the_line_beats_a_constant_guess() -> None:
    grid = [(s2, d) for s2 in (1.0, 1.25, 3.5, 4.0) for d in (4, 10, 25, 30, 45, 50, 60)]
    # Outcomes exactly as the line predicts: 6 xi_c = 21.8, 40.8, 46.6, 41.9 (13 fail).
    truth = {(s2, d): ("trains" if d < sds.xi_c_table([s2], 0.05)["6 xi_c"].iloc[0]
                       else "fails") for s2, d in grid}
    claim = sds.claims(_cells(truth))[0]
    assert claim.holds is True and "28 of 28 decided cells agree" in claim.measurement
    # Everything trains: the line is wrong wherever it predicts failure.
    claim = sds.claims(_cells(dict.fromkeys(grid, "trains")))[0]
    assert claim.holds is False


def _spreads(orth: list[float], gauss: list[float], depths=(16, 48)) -> pd.DataFrame:
    rows = []
    for depth, o, g in zip(depths, orth, gauss):
        rows.append({"depth": depth, "init": "orthogonal", "runs": 4, "log10 spread": o,
                     "SE": 0.01, "min spread": 10**o * 0.9, "max spread": 10**o * 1.1})
        rows.append({"depth": depth, "init": "gaussian", "runs": 4, "log10 spread": g,
                     "SE": 0.05, "min spread": 10**g * 0.9, "max spread": 10**g * 1.1})
    return pd.DataFrame(rows)


def test_dynamical_isometry_rules() -> None:
    losses = pd.DataFrame([
        {"depth": 16, "init": "orthogonal", "log10 loss @5": -0.1, "SE @5": 0.01},
        {"depth": 16, "init": "gaussian", "log10 loss @5": -0.09, "SE @5": 0.01},
        {"depth": 48, "init": "orthogonal", "log10 loss @5": -0.2, "SE @5": 0.01},
        {"depth": 48, "init": "gaussian", "log10 loss @5": 0.1, "SE @5": 0.02}])
    ortho, gauss, faster = di.claims(_spreads([0.36, 0.38], [3.3, 8.2]), losses)
    assert ortho.holds is True and gauss.holds is True and faster.holds is True
    # Orthogonal spreading too (x 10 from 16 to 48 layers), Gaussian flat, Gaussian faster.
    slow = losses.assign(**{"log10 loss @5": losses["log10 loss @5"] * -1})
    ortho, gauss, faster = di.claims(_spreads([0.36, 1.4], [3.3, 3.31]), slow)
    assert ortho.holds is False and gauss.holds is False and faster.holds is False
    assert np.isfinite(di.NEAR)
