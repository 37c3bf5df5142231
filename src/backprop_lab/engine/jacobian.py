"""The input-output Jacobian's singular values: dynamical isometry as a diagnostic.

For hidden layers l = 1..L-1 with pre-activations z^l = W^l a^{l-1} + b^l and a^l = f(z^l),
the Jacobian of the last hidden layer's activations with respect to the input, at one input x,
is the product of the layers' Jacobians (Saxe et al. 2014; Pennington, Schoenholz & Ganguli
2017; the readout layer is not part of it):

    J(x) = D_{L-1} W^{L-1} ... D_1 W^1,     D_l = diag(f'(z^l(x))),     J (n_{L-1}, n_0)

Its squared singular values spread the input's perturbations: all near 1 is *dynamical
isometry*. Mean-field theory predicts their mean (||J||_F^2 / n_{L-1}, averaged over weights):

    prod_l chi_l,     chi_l = n_l Var(W^l) E[f'(sqrt(q^l) z)^2]   (= sigma_w^2 E[f'^2] for
                                                                   equal widths)

with q^l the variance map from the probes' mean squared input (engine/theory.py); each layer's
own D_l W_l has mean squared singular value chi_l. Summaries, over P probe inputs:

    mean_sq_sv    mean over probes of ||J||_F^2 / n_{L-1}
    max_sv        the largest singular value over the probes
    spread        median over probes of max sv / median sv (1: isometry)

:class:`JacobianProbe` is a training callback that records them at initialization and every
``every`` epochs (the histogram epochs) and at the end: off the per-epoch path. Its cost is
P (L-1) batched products of (n x n) matrices and as many SVDs, about n^3 P L flops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from backprop_lab.engine.initializers import weight_variance
from backprop_lab.engine.network import MLP
from backprop_lab.engine.theory import derivative_moment, mean_field

#: Summary metrics, as MLflow names them.
METRICS = ("jacobian/mean_sq_sv", "jacobian/max_sv", "jacobian/spread",
           "jacobian/theory_mean_sq_sv")


@dataclass
class JacobianSpectrum:
    """Singular values at one epoch. ``io`` (P, min(n_{L-1}, n_0)): of each probe's
    input-output Jacobian, descending; ``layers``: per hidden layer l = 1..L-1, (P, min(n_l,
    n_{l-1})) of D_l W^l; ``io_mean_sq`` (P,) ||J||_F^2 / n_{L-1}; ``layer_mean_sq``
    (L-1, P) likewise for each layer; ``theory_mean_sq`` prod_l chi_l and ``theory_layers``
    (L-1,) chi_l."""

    epoch: int
    io: np.ndarray
    layers: list[np.ndarray]
    io_mean_sq: np.ndarray
    layer_mean_sq: np.ndarray
    theory_mean_sq: float
    theory_layers: np.ndarray

    def summary(self) -> dict[str, float]:
        """The four metrics of :data:`METRICS`."""
        median = np.median(self.io, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = float(np.median(self.io[:, 0] / median))
        return {"jacobian/mean_sq_sv": float(np.mean(self.io_mean_sq)),
                "jacobian/max_sv": float(np.max(self.io)),
                "jacobian/spread": spread,
                "jacobian/theory_mean_sq_sv": self.theory_mean_sq}


def theory_chi(net: MLP, input_var: float) -> np.ndarray:
    """chi_l = n_l Var(W^l) E[f'(sqrt(q^l) z)^2] of hidden layers l = 1..L-1 (L-1,), with q^l
    from the variance map started at ``input_var`` and the network's sigma_b^2."""
    if net.n_layers < 2:
        return np.empty(0)
    mf = mean_field(net.activation.name, net.init, net.sizes, input_var=input_var,
                    sigma_b2=net.sigma_b2, sigma_w2=net.sigma_w2)
    return np.array([
        net.sizes[l] * weight_variance(net.init, net.sizes[l - 1], net.sizes[l], net.sigma_w2)
        * float(derivative_moment(net.activation, mf.q[l - 1]))
        for l in range(1, net.n_layers)])


def jacobian_spectrum(net: MLP, X: np.ndarray, epoch: int = 0) -> JacobianSpectrum:
    """Singular values of J(x) and of every D_l W^l for the probe inputs X (n_0, P)."""
    if net.n_layers < 2:
        raise ValueError(f"{net!r} has no hidden layer: no input-output Jacobian")
    X = np.ascontiguousarray(X, dtype=np.float64)
    P = X.shape[1]
    derivs: list[np.ndarray] = []

    def keep(l: int, z: np.ndarray) -> None:
        if l < net.n_layers - 1:
            derivs.append(net.activation.derivative(z.astype(np.float64)))  # (n_l, P)

    net.forward(X.astype(net.dtype), net.new_workspace(P), keep)
    io = None
    layers, layer_mean_sq = [], []
    for l, fprime in enumerate(derivs):
        W = net.weights[l].astype(np.float64)
        J_l = fprime.T[:, :, None] * W[None, :, :]  # (P, n_l, n_{l-1})
        layers.append(np.linalg.svd(J_l, compute_uv=False))
        layer_mean_sq.append(np.sum(J_l**2, axis=(1, 2)) / W.shape[0])
        io = J_l if io is None else np.matmul(J_l, io)
    top = net.sizes[-2]
    q0 = float(np.mean(X**2))
    chi = theory_chi(net, q0)
    return JacobianSpectrum(
        epoch=epoch, io=np.linalg.svd(io, compute_uv=False),
        layers=layers, io_mean_sq=np.sum(io**2, axis=(1, 2)) / top,
        layer_mean_sq=np.array(layer_mean_sq), theory_mean_sq=float(np.prod(chi)),
        theory_layers=chi)


def probe_inputs(X: np.ndarray, probes: int) -> np.ndarray:
    """``probes`` evenly spaced columns of X (d, n): (d, P), the same for every run of a data
    set and seed (no random draw)."""
    n = X.shape[1]
    idx = np.unique(np.linspace(0, n - 1, min(probes, n)).round().astype(np.intp))
    return np.ascontiguousarray(X[:, idx])


class JacobianProbe:
    """Training callback: the Jacobian spectrum at initialization, every ``every`` epochs
    (0: only at initialization and at the end) and at the last row.

    ``on_epoch_end(e)`` is called after epoch e's update, so the network then holds row e+1's
    weights: the spectrum is taken there for the rows e+1 that are due. ``records`` holds them
    in order; ``seconds`` their total cost.
    """

    def __init__(self, probes: int = 4, every: int = 0) -> None:
        if probes < 1:
            raise ValueError(f"jacobian probes must be a positive integer; got {probes!r}")
        self.probes, self.every = int(probes), int(every)
        self.records: list[JacobianSpectrum] = []
        self.seconds = 0.0
        self._X: np.ndarray | None = None
        self._net: MLP | None = None
        self._last_row = 0

    def _measure(self, epoch: int) -> None:
        if not np.all(np.isfinite(self._net.params)):  # a diverged run has no spectrum
            return
        tic = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):
            self.records.append(jacobian_spectrum(self._net, self._X, epoch))
        self.seconds += time.perf_counter() - tic

    def on_train_start(self, net: MLP, data, history) -> None:
        self._net, self._X = net, probe_inputs(data.X_train, self.probes)
        self._last_row = len(history.scalars["train/loss"]) - 1
        self._measure(0)

    def on_epoch_end(self, epoch: int, history) -> None:
        row = epoch + 1  # the weights now in the network
        if row > self._last_row:
            return
        if row == self._last_row or (self.every and row % self.every == 0):
            self._measure(row)

    def metric_block(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(names (k,), steps (n,), values (k, n)) of the summaries, for a store's
        ``log_metrics``."""
        steps = np.array([r.epoch for r in self.records], dtype=np.int64)
        values = np.array([[r.summary()[m] for r in self.records] for m in METRICS])
        return list(METRICS), steps, values.reshape(len(METRICS), len(self.records))

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything recorded, for ``np.savez``: epoch (n,), io (n, P, k), io_mean_sq (n, P),
        theory_mean_sq (n,), theory_layers (n, L-1), layer_mean_sq (n, L-1, P), and one
        layer_NN (n, P, k_l) per hidden layer (NN 1-based, as the per-layer metrics)."""
        if not self.records:
            return {}
        out = {"epoch": np.array([r.epoch for r in self.records]),
               "io": np.stack([r.io for r in self.records]),
               "io_mean_sq": np.stack([r.io_mean_sq for r in self.records]),
               "theory_mean_sq": np.array([r.theory_mean_sq for r in self.records]),
               "theory_layers": np.stack([r.theory_layers for r in self.records]),
               "layer_mean_sq": np.stack([r.layer_mean_sq for r in self.records])}
        for l in range(len(self.records[0].layers)):
            out[f"layer_{l + 1:02d}"] = np.stack([r.layers[l] for r in self.records])
        return out

