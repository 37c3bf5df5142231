"""Per-layer diagnostics of gradient flow, measured on the probe batch at the start of each epoch.

For weight layer l (1..L) with weights W (n_l, n_{l-1}), gradient dW, per-sample errors
delta (n_l, m) and activations a (n_l, m) on the probe batch of m samples:

- ``weight_norm`` = ||W||_F, ``grad_norm`` = ||dW||_F, ``grad_weight_ratio`` = ||dW|| / ||W||
- ``update_ratio`` = ||W_after - W_before||_F / ||W_before||_F over the epoch that follows
  (NaN for the last row, which no update follows)
- ``delta_std`` = std of all entries of delta = dL_i/dz (per-sample error, see losses.py)
- ``act_mean``, ``act_std`` over all entries of a (the output layer: of the output p)
- ``saturation`` = fraction of (unit, sample) pairs with f'(z) < 0.05 max f' (for relu: z <= 0)
- ``dead_fraction`` = fraction of units saturated in that sense on every probe sample
- ``preact_var`` = variance of all entries of the pre-activations z = W a + b (n_l, m) (the
  output layer: of its logits); mean-field theory's q^l (theory.py)

How: each epoch the probe pass is reduced to per-unit sums over its m samples, an (8, U) array
(U = n_1 + ... + n_L): sum a, sum delta, sum a^2, sum delta^2, the number of saturated samples,
whether that number is m, sum z and sum z^2. Pre-activations are reduced inside forward (by
``on_preact``, before the activation overwrites them), errors and derivatives layer by layer
inside backward (the workspace keeps them only until the next layer down), activations all
layers at once afterwards, and sum delta is m times the bias gradient. Per-layer sums, an
(11, L) array, follow by one ``np.add.reduceat`` over the units and one over the squared
weights, gradients and weight steps; the row's statistics are formed from them with whole-row
operations. A row is complete
once the epoch's update is applied (the update ratio needs it).

Histograms (64 bins over each array's own range) of a layer's weights, weight gradients,
activations and back-propagated errors delta (kind ``deltas``; Glorot & Bengio's Fig. 7) are
taken on the epochs asked for: set ``collect_histograms`` before the probe pass's backward, so
that ``on_layer`` bins each delta while it exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backprop_lab.engine.history import History
from backprop_lab.engine.network import MLP, Workspace

Array = np.ndarray
SATURATION_THRESHOLD = 0.05
HISTOGRAM_BINS = 64

# Rows of the per-unit sums (8, U), reduced to rows 3..10 of the per-layer sums (11, L). Pairs
# of rows are adjacent so that both a and delta take one operation per step.
A_SUM, D_SUM, A_SQ, D_SQ, N_SAT, DEAD, Z_SUM, Z_SQ = range(8)
W_SQ, G_SQ, U_SQ = range(3)
# From this many weights (float64 networks), the squared norms of the weights, gradients and
# steps are one BLAS dot product per layer: one read of the array instead of squaring it into
# a buffer and summing the buffer (three passes); ~2.8x faster on 4.2M weights. Below it the
# per-layer calls cost more than they save. The sums then differ from the pairwise ones in the
# last bits (the training itself does not depend on them).
DOT_MIN_WEIGHTS = 1 << 16


@dataclass
class Histogram:
    """Counts (64,) over bin edges (65,) of one layer's weights, gradients or activations."""

    epoch: int
    layer: int  # 1..L
    kind: str  # "weights" | "grads" | "activations" | "deltas"
    counts: np.ndarray
    edges: np.ndarray


class DiagnosticsRecorder:
    """Reduces each epoch's probe pass and update to one row of per-layer statistics.

    ``ws`` is the workspace of the probe pass (m samples); pass ``on_preact`` to
    ``MLP.forward`` and ``on_layer`` to ``MLP.backward`` for that pass, then call ``measure``,
    and ``record_update`` after the epoch's updates.
    """

    def __init__(self, net: MLP, ws: Workspace) -> None:
        self.net = net
        self.ws = ws
        self.m = m = ws.m
        U, nw, L = net.n_units, net.n_weights, net.n_layers
        self.per_unit = np.empty((8, U), dtype=net.dtype)
        self.per_layer = np.empty((11, L))
        # The squared weights, then the squared gradients, then W_before until the update's
        # step W_after - W_before replaces it.
        self.flat = np.empty(nw, dtype=net.dtype)
        self.ones = np.ones(m, dtype=net.dtype)
        widths = np.diff(net.unit_offsets).astype(float)
        # Divisors of the per-layer sums of A_SUM..DEAD: entries per layer, units per layer.
        self.divisors = np.vstack([np.tile(widths * m, (5, 1)), widths,
                                   np.tile(widths * m, (2, 1))])
        self.unit_starts = net.unit_offsets[:-1]
        self.weight_starts = net.weight_offsets[:-1]
        self.weight_segments = [
            (int(a), int(b)) for a, b in zip(net.weight_offsets[:-1], net.weight_offsets[1:])
        ]
        # Saturation: f'(z) < 5% of the largest f' of the layer's non-linearity (the output
        # layer: of dp/dz).
        self.threshold = SATURATION_THRESHOLD * net.activation.max_derivative
        self.output_threshold = SATURATION_THRESHOLD * net.head.max_derivative
        rows = [net.layer_rows(l) for l in range(L)]
        self._unit_rows = [(self.per_unit[D_SQ, r], self.per_unit[N_SAT, r]) for r in rows]
        self._z_rows = [(self.per_unit[Z_SUM, r], self.per_unit[Z_SQ, r]) for r in rows]
        self.by_dot = net.n_weights >= DOT_MIN_WEIGHTS and net.dtype == np.float64
        self.collect_histograms = False
        self._delta_histograms: list[tuple[int, np.ndarray, np.ndarray]] = []

    def on_preact(self, l: int, z: Array) -> None:
        """Reduce layer l's pre-activations z (n_l, m) to per-unit sums while forward holds them."""
        z_sum, z_sq = self._z_rows[l]
        np.matmul(z, self.ones, out=z_sum)
        np.vecdot(z, z, out=z_sq)

    def on_layer(self, l: int, delta: Array, fprime: Array | None) -> None:
        """Reduce layer l's errors delta (n_l, m) and derivatives f'(z) (n_l, m) while backward
        holds them; fprime is overwritten with 0/1 indicators (NaN is below nothing)."""
        d_sq, n_sat = self._unit_rows[l]
        np.vecdot(delta, delta, out=d_sq)
        if self.collect_histograms:
            finite = delta[np.isfinite(delta)]
            self._delta_histograms.append((l, *np.histogram(finite, bins=HISTOGRAM_BINS)))
        if fprime is None:  # the output layer: dp/dz, in the derivative buffer (free until now)
            p = self.ws.A[self.net.layer_rows(l)]
            fprime = self.net.head.derivative(p, out=self.ws.fprime(l))
            np.less(fprime, self.output_threshold, out=fprime)
        else:
            np.less(fprime, self.threshold, out=fprime)
        np.matmul(fprime, self.ones, out=n_sat)

    def measure(self, epoch: int, history: History) -> None:
        """Fill history row ``epoch`` (all but its update ratio) from the probe pass (after
        forward, and backward with ``on_layer``) and the network's weights and gradients."""
        net, u, A, nw = self.net, self.per_unit, self.ws.A, self.net.n_weights
        np.matmul(A, self.ones, out=u[A_SUM])
        np.vecdot(A, A, out=u[A_SQ])
        # sum_i delta_i = m db: the bias gradient holds the error's per-unit sums.
        np.multiply(net.grads[nw : nw + net.n_units], self.m, out=u[D_SUM])
        np.greater_equal(u[N_SAT], self.m - 0.5, out=u[DEAD])
        sums = self.per_layer
        np.add.reduceat(u, self.unit_starts, axis=1, dtype=np.float64, out=sums[3:])
        self.squared_norms(net.params, sums[W_SQ])
        self.squared_norms(net.grads, sums[G_SQ])
        np.copyto(self.flat, net.params[:nw])  # W_before

        out, e = history.layers, epoch
        norms = np.sqrt(sums[W_SQ : G_SQ + 1])
        out["weight_norm"][e] = norms[0]
        out["grad_norm"][e] = norms[1]
        np.divide(norms[1], norms[0], out=out["grad_weight_ratio"][e])
        # Means over each layer's entries (dead: over its units).
        means = np.divide(sums[3:], self.divisors)
        out["act_mean"][e] = means[A_SUM]
        out["saturation"][e] = means[N_SAT]
        out["dead_fraction"][e] = means[DEAD]
        # std = sqrt(max(E[x^2] - E[x]^2, 0)) for a and delta at once.
        std = means[A_SQ : D_SQ + 1]
        std -= np.square(means[A_SUM : D_SUM + 1])
        np.sqrt(np.maximum(std, 0.0, out=std), out=std)
        out["act_std"][e] = std[0]
        out["delta_std"][e] = std[1]
        z_var = np.subtract(means[Z_SQ], np.square(means[Z_SUM]), out=out["preact_var"][e])
        np.maximum(z_var, 0.0, out=z_var)

    def record_update(self, epoch: int, history: History) -> None:
        """Fill row ``epoch``'s update ratio once the epoch's updates are applied."""
        step = np.subtract(self.net.params[: self.net.n_weights], self.flat, out=self.flat)
        u_sq = self.squared_norms(step, self.per_layer[U_SQ], in_place=True)
        ratio = np.sqrt(u_sq, out=history.layers["update_ratio"][epoch])
        ratio /= history.layers["weight_norm"][epoch]

    def squared_norms(self, values: Array, out: Array, in_place: bool = False) -> Array:
        """Per-layer sums of squares of the weight part of ``values`` (a parameter-sized
        vector, weights first) into ``out`` (L,), accumulated in float64. ``in_place``: values
        is the scratch buffer itself and may be overwritten."""
        if self.by_dot:
            for l, (a, b) in enumerate(self.weight_segments):
                segment = values[a:b]
                out[l] = np.dot(segment, segment)
            return out
        squares = np.square(values[: self.net.n_weights],
                            out=values if in_place else self.flat)
        return np.add.reduceat(squares, self.weight_starts, dtype=np.float64, out=out)

    def histograms(self, epoch: int) -> list[Histogram]:
        """Histograms of weights, gradients and activations per layer of the probe pass just
        measured (call it before the optimizer steps), and of its errors delta when
        ``collect_histograms`` was set for its backward (then reset)."""
        net, ws = self.net, self.ws
        out = [Histogram(epoch, l + 1, "deltas", counts, edges)
               for l, counts, edges in sorted(self._delta_histograms, key=lambda h: h[0])]
        self._delta_histograms = []
        self.collect_histograms = False
        for l, (a, b) in enumerate(self.weight_segments):
            for kind, values in (
                ("weights", net.params[a:b]),
                ("grads", net.grads[a:b]),
                ("activations", ws.A[net.layer_rows(l)]),
            ):
                counts, edges = finite_histogram(values)
                out.append(Histogram(epoch, l + 1, kind, counts, edges))
        return out


def finite_histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """(counts (bins,), edges (bins + 1,)) of the finite ``values``; inf and NaN are left out.

    Edges are made here, not by ``np.histogram``: the finite values of a diverging network can
    span more than the largest float (-1e308 .. 1e308), where numpy cannot make finite bins.
    """
    finite = values[np.isfinite(values)].astype(np.float64, copy=False)
    if finite.size == 0:
        return np.zeros(bins, dtype=np.int64), np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    # Halved ends, then doubled: the span of halves never overflows, and halving and doubling
    # are exact, so the outer edges are lo and hi themselves.
    edges = np.linspace(lo / 2, hi / 2, bins + 1) * 2
    edges[0], edges[-1] = lo, hi
    counts, _ = np.histogram(finite, bins=edges)
    return counts, edges
