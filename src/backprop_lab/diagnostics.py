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

Cost: training writes the activations, derivatives and errors of each probe pass straight into one
slot of a ring of K workspaces (no copy), and only the flat parameter and gradient vectors are
copied per epoch. Every K epochs the statistics of all K slots and all L layers are reduced at
once with a fixed number of array operations, so the per-epoch Python overhead does not grow with
depth; K is chosen so the ring stays within ``ring_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backprop_lab.history import History
from backprop_lab.network import MLP, Workspace

SATURATION_THRESHOLD = 0.05
HISTOGRAM_BINS = 64


@dataclass
class Histogram:
    """Counts (64,) over bin edges (65,) of one layer's weights, gradients or activations."""

    epoch: int
    layer: int  # 1..L
    kind: str  # "weights" | "grads" | "activations"
    counts: np.ndarray
    edges: np.ndarray


class DiagnosticsRecorder:
    """Ring buffers for K probe passes and their block reduction into a History."""

    def __init__(self, net: MLP, m: int, ring_bytes: int = 8 << 20, max_slots: int = 64) -> None:
        self.net = net
        self.m = m
        U, k = net.n_units, net.sizes[-1]
        slot_bytes = 3 * U * m * net.dtype.itemsize
        K = int(max(1, min(max_slots, ring_bytes // max(slot_bytes, 1))))
        self.K = K
        self.A = np.empty((K, U, m), dtype=net.dtype)
        self.F = np.empty((K, U, m), dtype=net.dtype)
        self.D = np.empty((K, U, m), dtype=net.dtype)
        self.slots = [
            Workspace(self.A[i], self.F[i], self.D[i], np.empty((k, m), dtype=net.dtype))
            for i in range(K)
        ]
        P, nw = net.n_params, net.n_weights
        self.params = np.empty((K, P))
        self.grads = np.empty((K, P))
        self.updates = np.full((K, nw), np.nan)
        self.epochs: list[int] = []
        # Saturation thresholds: 5% of the largest derivative of the hidden activation, and of
        # the output non-linearity for the output rows (scalars compare much faster than rows).
        self.hidden_units = int(net.unit_offsets[-2])
        self.hidden_threshold = SATURATION_THRESHOLD * net.activation.max_derivative
        self.output_threshold = SATURATION_THRESHOLD * net.head.max_derivative
        thr = np.full(U, self.hidden_threshold)
        thr[self.hidden_units :] = self.output_threshold
        self.threshold = thr
        self.mask = np.empty((K, U, m), dtype=bool)
        self.ones = np.ones(m, dtype=net.dtype)
        self.unit_starts = net.unit_offsets[:-1]
        self.weight_starts = net.weight_offsets[:-1]
        self.widths = np.diff(net.unit_offsets).astype(float)

    # -- per epoch -----------------------------------------------------------------------------
    def next_workspace(self) -> Workspace:
        """The ring slot the next probe pass writes into."""
        return self.slots[len(self.epochs)]

    def capture(self, epoch: int) -> None:
        """Record the probe pass just run in the current slot (after forward and backward)."""
        i = len(self.epochs)
        net = self.net
        net.output_derivative(self.slots[i])
        self.params[i] = net.params
        self.grads[i] = net.grads
        self.updates[i] = np.nan
        self.epochs.append(epoch)

    def record_update(self) -> None:
        """Record W_after - W_before of the epoch whose probe pass was captured last."""
        i = len(self.epochs) - 1
        nw = self.net.n_weights
        np.subtract(self.net.params[:nw], self.params[i, :nw], out=self.updates[i])

    @property
    def full(self) -> bool:
        return len(self.epochs) == self.K

    @property
    def pending(self) -> int:
        return len(self.epochs)

    # -- per block -----------------------------------------------------------------------------
    def flush(self, history: History) -> range:
        """Reduce the captured slots into their history rows; returns the rows completed."""
        k = len(self.epochs)
        if k == 0:
            return range(history.n_rows, history.n_rows)
        first = self.epochs[0]
        rows = slice(first, first + k)
        nw = self.net.n_weights
        count = self.widths * self.m  # entries per layer

        def per_layer(per_unit: np.ndarray) -> np.ndarray:  # (k, U) -> (k, L)
            return np.add.reduceat(per_unit, self.unit_starts, axis=1)

        A, F, D = self.A[:k], self.F[:k], self.D[:k]
        # Sums and sums of squares over samples as (batched) matrix products: BLAS speed.
        act_sum = per_layer(np.matmul(A, self.ones))
        act_sq = per_layer(np.matmul(A[..., None, :], A[..., :, None])[..., 0, 0])
        # sum_i delta_i = m * db: the bias gradient already holds the error's per-unit sums.
        delta_sum = per_layer(self.grads[:k, nw:] * self.m)
        delta_sq = per_layer(np.matmul(D[..., None, :], D[..., :, None])[..., 0, 0])
        mask = self.mask[:k]
        h = self.hidden_units
        np.less(F[:, :h], self.hidden_threshold, out=mask[:, :h])
        np.less(F[:, h:], self.output_threshold, out=mask[:, h:])
        # count_nonzero over a whole contiguous block is far faster than any per-axis count.
        layer_rows = [self.net.layer_rows(l) for l in range(self.net.n_layers)]
        saturated = np.array(
            [[np.count_nonzero(mask[i, rows]) for rows in layer_rows] for i in range(k)],
            dtype=float,
        )
        dead = per_layer(F.max(axis=2) < self.threshold)

        act_mean = act_sum / count
        delta_mean = delta_sum / count
        w_sq = np.add.reduceat(np.square(self.params[:k, :nw]), self.weight_starts, axis=1)
        g_sq = np.add.reduceat(np.square(self.grads[:k, :nw]), self.weight_starts, axis=1)
        u_sq = np.add.reduceat(np.square(self.updates[:k]), self.weight_starts, axis=1)
        weight_norm = np.sqrt(w_sq)
        grad_norm = np.sqrt(g_sq)

        out = history.layers
        out["weight_norm"][rows] = weight_norm
        out["grad_norm"][rows] = grad_norm
        out["grad_weight_ratio"][rows] = grad_norm / weight_norm
        out["update_ratio"][rows] = np.sqrt(u_sq) / weight_norm
        out["act_mean"][rows] = act_mean
        out["act_std"][rows] = np.sqrt(np.maximum(act_sq / count - act_mean**2, 0.0))
        out["delta_std"][rows] = np.sqrt(np.maximum(delta_sq / count - delta_mean**2, 0.0))
        out["saturation"][rows] = saturated / count
        out["dead_fraction"][rows] = dead / self.widths
        self.epochs.clear()
        history.n_rows = first + k
        return range(first, first + k)

    def histograms(self, epoch: int) -> list[Histogram]:
        """Histograms of weights, gradients and activations per layer, from the current slot."""
        i = len(self.epochs) - 1
        net, ws = self.net, self.slots[i]
        out = []
        for l in range(net.n_layers):
            w0, w1 = self.weight_starts[l], net.weight_offsets[l + 1]
            for kind, values in (
                ("weights", self.params[i, w0:w1]),
                ("grads", self.grads[i, w0:w1]),
                ("activations", ws.A[net.layer_rows(l)]),
            ):
                finite = values[np.isfinite(values)]
                counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
                out.append(Histogram(epoch, l + 1, kind, counts, edges))
        return out
