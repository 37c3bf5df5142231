"""The Jacobian spectrum (engine/jacobian.py): against finite differences, against theory on
wide networks, orthogonal vs Gaussian, and the callback's schedule."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_lab.engine.datasets import load_dataset
from backprop_lab.engine.jacobian import JacobianProbe, jacobian_spectrum
from backprop_lab.engine.network import MLP
from backprop_lab.engine.optimizers import make_optimizer
from backprop_lab.engine.training import train


def last_hidden(net: MLP, X: np.ndarray) -> np.ndarray:
    ws = net.new_workspace(X.shape[1])
    net.forward(X, ws)
    return ws.A[net.layer_rows(net.n_layers - 2)].copy()


@pytest.mark.parametrize("init", ["gaussian", "orthogonal", "he"])
def test_singular_values_match_a_finite_difference_jacobian(init: str) -> None:
    rng = np.random.default_rng(0)
    net = MLP([5, 7, 6, 4, 3], "tanh", "softmax_ce", init, rng,
              sigma_w2=None if init == "he" else 1.8, sigma_b2=0.05)
    X = rng.normal(size=(5, 2))
    spec = jacobian_spectrum(net, X)
    h = 1e-6
    for p in range(2):
        J = np.empty((4, 5))
        for i in range(5):
            up, down = X[:, p:p + 1].copy(), X[:, p:p + 1].copy()
            up[i] += h
            down[i] -= h
            J[:, i] = ((last_hidden(net, up) - last_hidden(net, down)) / (2 * h))[:, 0]
        np.testing.assert_allclose(spec.io[p], np.linalg.svd(J, compute_uv=False), rtol=1e-6,
                                   atol=1e-9)
        assert spec.io_mean_sq[p] == pytest.approx(np.sum(J**2) / 4, rel=1e-6)
    assert len(spec.layers) == 3 and spec.layers[0].shape == (2, 5)


def test_mean_squared_singular_value_follows_theory_on_wide_networks() -> None:
    """||J||_F^2 / n against prod chi_l: 256 wide, 6 hidden layers, 3 networks x 4 probes;
    the per-network log-ratio fluctuates by about sqrt(2 L / n) ~ 0.2."""
    ratios = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        net = MLP([256] + [256] * 6 + [10], "tanh", "softmax_ce", "gaussian", rng,
                  sigma_w2=1.76, sigma_b2=0.05)
        spec = jacobian_spectrum(net, rng.normal(size=(256, 4)))
        ratios.append(np.mean(spec.io_mean_sq) / spec.theory_mean_sq)
        np.testing.assert_allclose(spec.layer_mean_sq.mean(axis=1), spec.theory_layers,
                                   rtol=0.1)
    assert np.exp(np.mean(np.log(ratios))) == pytest.approx(1.0, abs=0.15)


def test_orthogonal_stays_isometric_where_gaussian_spreads() -> None:
    """tanh at the critical point sigma_w^2 = 1, sigma_b^2 = 0 (q* = 0): orthogonal weights
    keep max/median of the singular values near 1 at depth 32; Gaussian ones do not."""
    spreads = {}
    for init in ("orthogonal", "gaussian"):
        rng = np.random.default_rng(1)
        net = MLP([64] * 33 + [10], "tanh", "softmax_ce", init, rng, sigma_w2=1.0)
        spreads[init] = jacobian_spectrum(net, 0.1 * rng.normal(size=(64, 4))).summary()[
            "jacobian/spread"]
    assert spreads["orthogonal"] < 1.5 < 3 < spreads["gaussian"], spreads


def test_probe_records_init_histogram_epochs_and_end_and_is_deterministic() -> None:
    def run():
        data = load_dataset("moons", n_samples=40, rng=np.random.default_rng(0))
        net = MLP([2, 8, 8, 1], "tanh", init="orthogonal", rng=np.random.default_rng(0),
                  sigma_w2=1.5, sigma_b2=0.05)
        probe = JacobianProbe(probes=3, every=4)
        train(net, data, make_optimizer("gd", lr=0.5), epochs=10, callbacks=[probe])
        return probe

    probe = run()
    assert [r.epoch for r in probe.records] == [0, 4, 8, 10]
    names, steps, values = probe.metric_block()
    assert steps.tolist() == [0, 4, 8, 10] and values.shape == (4, 4)
    assert probe.arrays()["io"].shape == (4, 3, 2)  # 3 probes, min(8, 2) singular values
    np.testing.assert_array_equal(values, run().metric_block()[2])


def test_a_tracked_run_logs_the_spectrum_summaries_and_keeps_the_spectra(
        run_cli, store, client_for):
    from tests.conftest import artifact_paths, runs_of, split_roles

    result = run_cli("model=deep", "model.depth=3", "model.width=6", "model.init=orthogonal",
                     "model.sigma_w2=1.5", "model.sigma_b2=0.05", "jacobian_probes=3",
                     "histogram_every=2", "epochs=5", "figures=false", f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    client = client_for(store)
    _, jobs = split_roles(runs_of(client))
    run = jobs[0]
    for name in ("jacobian/mean_sq_sv", "jacobian/max_sv", "jacobian/spread",
                 "jacobian/theory_mean_sq_sv"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert sorted(steps) == [0, 2, 4, 5], name
    assert "jacobian.npz" in artifact_paths(client, run.info.run_id)
    assert float(run.data.tags["backprop_lab.seconds.jacobian"]) >= 0
