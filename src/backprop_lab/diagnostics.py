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

Cost: each epoch reduces the probe pass to per-unit sums (squared errors, activations and their
squares, saturated samples) in one fused call while its buffers are still in cache (see
kernels.py: every layer at once for a stacked workspace, layer by layer inside backward for a
lean one), and copies the flat weight and gradient vectors into ring buffers. Every K epochs
(up to MAX_SLOTS, within RING_BYTES) the per-layer statistics of all K epochs are formed at once,
so the per-epoch Python overhead does not grow with depth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backprop_lab import kernels, network
from backprop_lab.history import History
from backprop_lab.network import MLP, Workspace

Array = np.ndarray
SATURATION_THRESHOLD = 0.05
HISTOGRAM_BINS = 64
#: The ring buffers hold per-unit sums, weights and gradients of up to MAX_SLOTS epochs in about
#: RING_BYTES; the per-layer statistics are formed once per ring (fewer, larger numpy calls).
RING_BYTES = 1 << 20
MAX_SLOTS = 256


@dataclass
class Histogram:
    """Counts (64,) over bin edges (65,) of one layer's weights, gradients or activations."""

    epoch: int
    layer: int  # 1..L
    kind: str  # "weights" | "grads" | "activations"
    counts: np.ndarray
    edges: np.ndarray


class DiagnosticsRecorder:
    """Per-epoch per-unit sums in small ring buffers, reduced per layer in blocks of K epochs."""

    def __init__(self, net: MLP, m: int, ring_bytes: int | None = None,
                 max_slots: int | None = None) -> None:
        ring_bytes = RING_BYTES if ring_bytes is None else ring_bytes
        max_slots = MAX_SLOTS if max_slots is None else max_slots
        self.net = net
        self.m = m
        U, P, nw, L = net.n_units, net.n_params, net.n_weights, net.n_layers
        # Small passes: a stacked workspace whose errors, activations and derivatives are
        # reduced in one call per epoch (the call count matters more than the arithmetic), whole
        # gradient vectors copied. Large ones: a lean workspace reduced layer by layer inside
        # backward while each layer is in cache, and gradient norms taken per layer (no copy).
        self.stacked = 3 * U * m * net.dtype.itemsize <= network.STACK_BYTES
        row_bytes = 8 * (4 * U + nw + (P if self.stacked else L + U))
        K = int(max(1, min(max_slots, ring_bytes // row_bytes)))
        self.K = K
        # Per unit: sum of delta^2 | sum of a^2, and sum of a | number of saturated samples.
        self.squares = np.empty((K, 2 * U), dtype=net.dtype)
        self.sums = np.empty((K, 2 * U), dtype=net.dtype)
        self.params = np.empty((K, nw), dtype=net.dtype)  # weights at the start of each epoch
        if self.stacked:
            self.grads = np.empty((K, P), dtype=net.dtype)
        else:
            self.grad_sq = np.empty((K, L))  # per layer ||dW||^2
            self.bias_grads = np.empty((K, U), dtype=net.dtype)
        # Scratch for the flush: fresh large temporaries cost a page fault per 4 KiB page.
        widest = max(b - a for a, b in zip(net.weight_offsets[:-1], net.weight_offsets[1:]))
        self._step = np.empty((K, int(widest)), dtype=net.dtype)
        self.weight_segments = [
            (int(a), int(b)) for a, b in zip(net.weight_offsets[:-1], net.weight_offsets[1:])
        ]
        self.updated = np.zeros(K, dtype=bool)
        self.epochs: list[int] = []
        # Saturation: f'(z) < 5% of max f'. The output layer's slope dp/dz is rescaled to the
        # hidden activation's maximum so that one scalar comparison covers every layer.
        self.threshold = SATURATION_THRESHOLD * net.activation.max_derivative
        self.output_scale = net.activation.max_derivative / net.head.max_derivative
        self.hidden_units = U - net.sizes[-1]
        self.unit_starts = net.unit_offsets[:-1]
        self.weight_starts = net.weight_offsets[:-1]
        self.widths = np.diff(net.unit_offsets).astype(float)
        self.last_workspace: Workspace | None = None
        self._no_rows = np.empty((0, m), dtype=net.dtype)
        self._unit_sums = kernels.unit_sums_impl()
        kernels.warm_up(net.dtype)  # before training's clock starts

    # -- per epoch -----------------------------------------------------------------------------
    def workspace(self) -> Workspace:
        """The probe pass's workspace: stacked when it fits ``network.STACK_BYTES``."""
        return self.net.new_workspace(self.m, stacked=self.stacked)

    def backward_hook(self, ws: Workspace) -> Callable[[int, Array, Array | None], None] | None:
        """What ``MLP.backward`` must call per layer for this workspace (lean ones only)."""
        self._hook_ws = ws
        return None if ws.stacked else self._on_layer

    def _on_layer(self, l: int, delta: Array, fprime: Array | None) -> None:
        """Lean workspaces: reduce layer l while its rows are in cache (backward has just used
        its activations and formed its error and derivative; none for the output layer)."""
        i, U = len(self.epochs), self.net.n_units
        lo, hi = int(self.net.unit_offsets[l]), int(self.net.unit_offsets[l + 1])
        squares, sums = self.squares[i], self.sums[i]
        self._unit_sums(
            delta, self._hook_ws.A[lo:hi], self._no_rows if fprime is None else fprime,
            self.threshold, self.net.head.slope, self.output_scale,
            squares[lo:hi], squares[U + lo : U + hi], sums[lo:hi], sums[U + lo : U + hi])

    def capture(self, epoch: int, ws: Workspace) -> None:
        """Reduce the probe pass in ``ws`` (after forward and backward) to per-unit sums."""
        i = len(self.epochs)
        net = self.net
        U = net.n_units
        if ws.stacked:  # every layer at once; the output rows of F are not filled
            squares, sums = self.squares[i], self.sums[i]
            self._unit_sums(ws.D, ws.A, ws.F[: self.hidden_units], self.threshold,
                            net.head.slope, self.output_scale,
                            squares[:U], squares[U:], sums[:U], sums[U:])
        # else: every layer was reduced during backward (``_on_layer``)
        self.params[i] = net.params[: net.n_weights]
        if self.stacked:
            self.grads[i] = net.grads
        else:
            g = net.grads
            for l, (a, b) in enumerate(self.weight_segments):
                self.grad_sq[i, l] = np.vecdot(g[a:b], g[a:b])
            self.bias_grads[i] = g[net.n_weights :]
        self.updated[i] = False
        self.epochs.append(epoch)
        self.last_workspace = ws

    def record_update(self) -> None:
        """Mark that the epoch whose probe pass was captured last has applied its updates.

        W_after - W_before is formed at the flush, from the next captured weights (or the current
        ones), so nothing is copied here.
        """
        self.updated[len(self.epochs) - 1] = True

    @property
    def full(self) -> bool:
        return len(self.epochs) == self.K

    @property
    def pending(self) -> int:
        return len(self.epochs)

    # -- per block -----------------------------------------------------------------------------
    def flush(self, history: History) -> range:
        """Form the per-layer statistics of the captured epochs in their history rows; returns
        the rows completed."""
        k = len(self.epochs)
        if k == 0:
            return range(history.n_rows, history.n_rows)
        first = self.epochs[0]
        rows = slice(first, first + k)
        U, m, nw = self.net.n_units, self.m, self.net.n_weights
        count = self.widths * m  # entries per layer

        def per_layer(per_unit: np.ndarray) -> np.ndarray:  # (k, U) -> (k, L), float64
            return np.add.reduceat(per_unit, self.unit_starts, axis=1, dtype=np.float64)

        bias_grads = self.grads[:k, nw:] if self.stacked else self.bias_grads[:k]
        act_mean = per_layer(self.sums[:k, :U]) / count
        act_sq = per_layer(self.squares[:k, U:]) / count
        # sum_i delta_i = m * db: the bias gradient already holds the error's per-unit sums.
        delta_mean = per_layer(bias_grads) * (m / count)
        delta_sq = per_layer(self.squares[:k, :U]) / count
        saturated = self.sums[:k, U:]

        def layer_sq(flat: np.ndarray) -> np.ndarray:  # (k, n_weights) -> (k, L), float64
            squares = [np.vecdot(flat[:, a:b], flat[:, a:b]) for a, b in self.weight_segments]
            return np.stack(squares, axis=1).astype(np.float64)

        weight_norm = np.sqrt(layer_sq(self.params[:k]))
        grad_norm = np.sqrt(layer_sq(self.grads[:k, :nw]) if self.stacked else self.grad_sq[:k])
        # The weights after epoch j are the weights captured at the start of epoch j + 1; after
        # the block's last epoch they are the network's current weights. One layer at a time, so
        # the temporary is a layer's size, not the network's.
        update_sq = np.empty_like(weight_norm)
        for l, (a, b) in enumerate(self.weight_segments):
            before = self.params[:k, a:b]
            step = self._step[:k, : b - a]
            np.subtract(self.params[1:k, a:b], before[:-1], out=step[:-1])
            np.subtract(self.net.params[a:b], before[-1], out=step[-1])
            update_sq[:, l] = np.vecdot(step, step)
        update_ratio = np.sqrt(update_sq) / weight_norm
        update_ratio[~self.updated[:k]] = np.nan  # no update follows the last row

        out = history.layers
        out["weight_norm"][rows] = weight_norm
        out["grad_norm"][rows] = grad_norm
        out["grad_weight_ratio"][rows] = grad_norm / weight_norm
        out["update_ratio"][rows] = update_ratio
        out["act_mean"][rows] = act_mean
        out["act_std"][rows] = np.sqrt(np.maximum(act_sq - act_mean**2, 0.0))
        out["delta_std"][rows] = np.sqrt(np.maximum(delta_sq - delta_mean**2, 0.0))
        out["saturation"][rows] = per_layer(saturated) / count
        out["dead_fraction"][rows] = per_layer(saturated >= m - 0.5) / self.widths
        self.epochs.clear()
        history.n_rows = first + k
        return range(first, first + k)

    def histograms(self, epoch: int) -> list[Histogram]:
        """Histograms of weights, gradients and activations per layer of the probe pass just
        captured (call it before the optimizer steps)."""
        net, ws = self.net, self.last_workspace
        out = []
        for l, (a, b) in enumerate(self.weight_segments):
            for kind, values in (
                ("weights", net.params[a:b]),
                ("grads", net.grads[a:b]),
                ("activations", ws.A[net.layer_rows(l)]),
            ):
                finite = values[np.isfinite(values)]
                counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
                out.append(Histogram(epoch, l + 1, kind, counts, edges))
        return out
