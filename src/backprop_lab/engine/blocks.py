"""The cures for deep networks' gradient flow: residual connections and normalization layers.

:class:`BlockMLP` is an :class:`~backprop_lab.engine.network.MLP` whose hidden layers are blocks
(features x samples, as everywhere; hidden layer l of width n, a^{l-1} its input (n_{l-1}, m)):

    z^l = W^l a^{l-1} + b^l                               pre-activation (``preact_var``)
    y^l = N(z^l)                                          normalization, or y = z (``norm=none``)
    h^l = f(y^l)
    a^l = a^{l-1} + alpha h^l     (residual block)    or  a^l = h^l

- **Residual** (He et al. 2016; ``residual=True``, ``residual_scale`` alpha): every hidden
  layer but the first (which changes the width from the input's) is a block with a skip
  path, so every hidden width must be equal. The output layer is plain.
- **Layer normalization** (Ba et al. 2016; ``norm="layer"``): per sample, over the layer's n
  units: zhat = (z - mean_units z) / sqrt(var_units z + eps), y = gamma * zhat + beta.
- **Batch normalization** (Ioffe & Szegedy 2015; ``norm="batch"``): per unit, over the batch's
  m samples, in training mode; ``forward_eval`` (the validation metrics) uses running
  statistics instead, updated by the passes the training loop marks
  (``update_running_stats``): mean <- (1 - rho) mean + rho mean_batch and
  var <- (1 - rho) var + rho var_batch m / (m - 1), rho = 0.1 (PyTorch's BatchNorm1d).

gamma (n, 1) starts at 1 and beta (n, 1) at 0, per hidden layer; both live in the flat
parameter vector after the biases (all gammas, then all betas), so every optimizer updates
them. The biases b^l stay (before batch normalization they get no gradient: the batch mean
removes them).

Backpropagation, with g^l = dL_i/da^l the per-sample error at a layer's output and delta^l =
dL_i/dz^l (what the diagnostics record, the skip path included):

    g^{l-1} = W^l^T delta^l + g^l           (the second term only when layer l is residual)
    dL/dy^l = s_l g^l * f'(y^l),            s_l = alpha for residual blocks, else 1
    delta^l = N'(dL/dy^l): with u = gamma * dL/dy and means E over the normalized axis,
              delta = (u - E[u] - zhat E[u zhat]) / sqrt(var + eps)
    dL/dgamma = (1/m) sum_i dL/dy * zhat,   dL/dbeta = (1/m) sum_i dL/dy
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from backprop_lab.engine.initializers import RandomSource
from backprop_lab.engine.network import MLP, Workspace

Array = np.ndarray

NORMS = ("none", "layer", "batch")
#: PyTorch's defaults for LayerNorm and BatchNorm1d.
NORM_EPS = 1e-5
BATCH_MOMENTUM = 0.1


class BlockWorkspace(Workspace):
    """A :class:`Workspace` plus what blocks keep for backward: ``H`` (U, m) the activations
    h = f(y) of residual blocks (their ``A`` rows hold a = a_prev + alpha h), ``Zhat`` (U, m)
    the normalized pre-activations, ``inv_std[l]`` (1, m) for layer norm or (n_l, 1) for batch
    norm, and the output errors g of two layers and one scratch buffer, each (max width, m)."""

    def __init__(self, widths: list[int], m: int, dtype: np.dtype, residual: bool,
                 norm: str) -> None:
        super().__init__(widths, m, dtype)
        U, widest = int(self.offsets[-1]), max(widths)
        self.H = np.empty((U, m), dtype=dtype) if residual else self.A
        self.Zhat = np.empty((U, m), dtype=dtype) if norm != "none" else None
        shape = (lambda n: (1, m)) if norm == "layer" else (lambda n: (n, 1))
        self.inv_std = [np.empty(shape(n), dtype=dtype) for n in widths]
        self._g = (np.empty((widest, m), dtype=dtype), np.empty((widest, m), dtype=dtype))
        self.scratch = np.empty((widest, m), dtype=dtype)

    def g(self, l: int) -> Array:
        """Buffer (n_l, m) for dL_i/da^l of layer l (0-based)."""
        return self._g[l % 2][: int(self.offsets[l + 1] - self.offsets[l])]


class BlockMLP(MLP):
    """An MLP whose hidden layers are residual and/or normalized blocks (see the module's
    docstring); the plain network's arguments plus:

    Args:
        residual: a skip path around every hidden layer but the first (equal hidden widths).
        residual_scale: alpha, the residual branch's factor (finite, > 0).
        norm: ``none``, ``layer`` or ``batch`` (before the activation, on every hidden layer).
    """

    def __init__(
        self,
        sizes: list[int] | tuple[int, ...],
        activation: str = "tanh",
        output: str = "sigmoid_bce",
        init: str = "auto",
        rng: RandomSource | None = None,
        dtype: type | np.dtype = np.float64,
        sigma_w2: float | None = None,
        sigma_b2: float = 0.0,
        *,
        residual: bool = False,
        residual_scale: float = 1.0,
        norm: str = "none",
    ) -> None:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid choices: {', '.join(NORMS)}")
        if not (isinstance(residual_scale, (int, float)) and math.isfinite(residual_scale)
                and residual_scale > 0):
            raise ValueError(f"residual_scale must be a finite number > 0; got {residual_scale!r}")
        hidden = [int(s) for s in sizes[1:-1]]
        if residual and len(set(hidden)) > 1:
            raise ValueError(
                f"residual connections add each hidden layer's input to its result, so every "
                f"hidden layer needs the same width; got hidden widths {hidden} (layer widths "
                f"{[int(s) for s in sizes]})")
        if residual and len(hidden) < 2:
            raise ValueError(f"residual connections need at least two hidden layers (the first "
                             f"changes the width); got hidden widths {hidden}")
        self.norm = norm
        self.residual = bool(residual)
        self.residual_scale = float(residual_scale)
        super().__init__(sizes, activation, output, init, rng, dtype, sigma_w2, sigma_b2)
        L = self.n_layers
        #: is_residual[l]: layer l (0-based) adds its input to its output.
        self.is_residual = [self.residual and 1 <= l < L - 1 for l in range(L)]
        self.gains: list[Array] = []
        self.shifts: list[Array] = []
        self.grad_gains: list[Array] = []
        self.grad_shifts: list[Array] = []
        if norm != "none":
            start = self.n_weights + self.n_units
            n_hidden = self.n_units - self.sizes[-1]
            for l in range(L - 1):
                a, b = start + self.unit_offsets[l], start + self.unit_offsets[l + 1]
                for flat, gains, shifts in ((self.params, self.gains, self.shifts),
                                            (self.grads, self.grad_gains, self.grad_shifts)):
                    gains.append(flat[a:b].reshape(-1, 1))
                    shifts.append(flat[a + n_hidden : b + n_hidden].reshape(-1, 1))
                self.gains[l][...] = 1.0
        # Batch normalization's running statistics (state, not parameters: no optimizer step).
        self.running_mean = [np.zeros((n, 1), dtype=self.dtype) for n in hidden]
        self.running_var = [np.ones((n, 1), dtype=self.dtype) for n in hidden]

    def _extra_params(self, sizes: list[int]) -> int:
        return 0 if self.norm == "none" else 2 * sum(int(s) for s in sizes[1:-1])

    def new_workspace(self, m: int) -> BlockWorkspace:
        return BlockWorkspace(self.sizes[1:], m, self.dtype, self.residual, self.norm)

    # -- passes --------------------------------------------------------------------------------
    def forward(self, X: Array, ws: Workspace | None = None,
                on_preact: Callable[[int, Array], None] | None = None) -> Array:
        """Training-mode forward pass over X (d, m); returns p (k, m), a view into ``ws.A``.
        ``on_preact(l, z)`` sees each layer's z = W a + b (n_l, m) before normalization."""
        return self._forward(X, ws, on_preact, training=True)

    def forward_eval(self, X: Array, ws: Workspace | None = None) -> Array:
        """Evaluation-mode forward pass: batch normalization uses its running statistics."""
        return self._forward(X, ws, None, training=False)

    def _forward(self, X: Array, ws: Workspace | None, on_preact, training: bool) -> Array:
        if X.ndim != 2 or X.shape[0] != self.sizes[0]:
            raise ValueError(f"{self!r} takes inputs of shape ({self.sizes[0]}, m); got {X.shape}")
        ws = self.workspace(X.shape[1]) if ws is None else ws
        ws.X = X
        a = X
        last = self.n_layers - 1
        for l in range(last):
            rows = self.layer_rows(l)
            residual = self.is_residual[l]
            z = np.matmul(self.weights[l], a, out=(ws.H if residual else ws.A)[rows])
            z += self.biases[l]
            if on_preact is not None:
                on_preact(l, z)
            if self.norm != "none":
                self._normalize(l, z, ws, training)
            h = self.activation.fn(z, out=z)
            if residual:
                a = np.add(a, np.multiply(h, self.residual_scale, out=ws.A[rows]), out=ws.A[rows])
            else:
                a = h
        z = np.matmul(self.weights[last], a, out=ws.z_out)
        z += self.biases[last]
        if on_preact is not None:
            on_preact(last, z)
        return self.head.activate(z, out=ws.A[self.layer_rows(last)])

    def _normalize(self, l: int, z: Array, ws: BlockWorkspace, training: bool) -> None:
        """z (n, m) -> y = gamma zhat + beta in place; zhat and 1/sqrt(var + eps) kept in ws."""
        zhat, inv = ws.Zhat[self.layer_rows(l)], ws.inv_std[l]
        if self.norm == "batch" and not training:
            np.subtract(z, self.running_mean[l], out=zhat)
            np.sqrt(self.running_var[l] + NORM_EPS, out=inv)
        else:
            axis = 0 if self.norm == "layer" else 1
            mean = z.mean(axis=axis, keepdims=True)
            np.subtract(z, mean, out=zhat)
            np.square(zhat, out=z)  # z is free until y is written into it
            var = z.mean(axis=axis, keepdims=True)
            np.sqrt(var + NORM_EPS, out=inv)
            if self.norm == "batch" and self.update_running_stats:
                m = z.shape[1]
                self.running_mean[l] *= 1.0 - BATCH_MOMENTUM
                self.running_mean[l] += BATCH_MOMENTUM * mean
                self.running_var[l] *= 1.0 - BATCH_MOMENTUM
                self.running_var[l] += BATCH_MOMENTUM * var * (m / max(m - 1, 1))
        np.divide(1.0, inv, out=inv)
        zhat *= inv
        np.multiply(zhat, self.gains[l], out=z)
        z += self.shifts[l]

    def backward(
        self,
        Y: Array,
        ws: Workspace,
        on_layer: Callable[[int, Array, Array | None], None] | None = None,
    ) -> Array:
        """As :meth:`MLP.backward` (same callback, same gradient layout, plus the gains' and
        shifts' gradients); delta^l includes what reaches layer l through the skip paths."""
        X, m, L = ws.X, ws.m, self.n_layers
        delta = self.head.delta(ws.A[self.layer_rows(L - 1)], Y, out=ws.delta(L - 1))
        if on_layer is not None:
            on_layer(L - 1, delta, None)
        g_above = delta  # dL/da of layer l (only read when layer l is residual)
        for l in range(L - 1, -1, -1):
            a_prev = X if l == 0 else ws.A[self.layer_rows(l - 1)]
            np.matmul(delta, a_prev.T, out=self.grad_weights[l])
            np.add.reduce(delta, axis=1, keepdims=True, out=self.grad_biases[l])
            if l == 0:
                break
            k = l - 1
            g = np.matmul(self.weights[l].T, delta, out=ws.g(k))
            if self.is_residual[l]:
                g += g_above
            h = (ws.H if self.is_residual[k] else ws.A)[self.layer_rows(k)]
            fprime = self.activation.grad(h, out=ws.fprime(k))
            delta = np.multiply(g, fprime, out=ws.delta(k))  # dL/dy of layer k
            if self.is_residual[k]:
                delta *= self.residual_scale
            if self.norm != "none":
                self._normalize_backward(k, delta, ws)
            if on_layer is not None:
                on_layer(k, delta, fprime)
            g_above = g
        self.grads *= 1.0 / m
        return self.grads

    def _normalize_backward(self, l: int, dy: Array, ws: BlockWorkspace) -> None:
        """dL/dy (n, m) -> dL/dz in place; the gain's and shift's gradients (sums over samples)."""
        zhat, inv = ws.Zhat[self.layer_rows(l)], ws.inv_std[l]
        tmp = ws.scratch[: dy.shape[0]]
        np.multiply(dy, zhat, out=tmp)
        np.add.reduce(tmp, axis=1, keepdims=True, out=self.grad_gains[l])
        np.add.reduce(dy, axis=1, keepdims=True, out=self.grad_shifts[l])
        dy *= self.gains[l]  # u
        axis = 0 if self.norm == "layer" else 1
        np.multiply(dy, zhat, out=tmp)
        mean_u_zhat = tmp.mean(axis=axis, keepdims=True)
        dy -= dy.mean(axis=axis, keepdims=True)
        np.multiply(zhat, mean_u_zhat, out=tmp)
        dy -= tmp
        dy *= inv

    def predict_proba(self, X: Array) -> Array:
        """Output p (k, m) for inputs X (d, m) in evaluation mode, in fresh memory."""
        return self.forward_eval(X, self.new_workspace(X.shape[1])).copy()

    def __repr__(self) -> str:
        plain = super().__repr__()[:-1]
        extra = (f", residual x{self.residual_scale:g}" if self.residual else "") + (
            f", {self.norm} norm" if self.norm != "none" else "")
        return f"{plain}{extra})"


def make_network(
    sizes: list[int] | tuple[int, ...],
    activation: str = "tanh",
    output: str = "sigmoid_bce",
    init: str = "auto",
    rng: RandomSource | None = None,
    dtype: type | np.dtype = np.float64,
    sigma_w2: float | None = None,
    sigma_b2: float = 0.0,
    *,
    residual: bool = False,
    residual_scale: float = 1.0,
    norm: str = "none",
) -> MLP:
    """The plain :class:`MLP` when no block option is set (its faster loop), else a
    :class:`BlockMLP`; the same weights for the same ``rng`` either way."""
    if not residual and norm == "none":
        if not (isinstance(residual_scale, (int, float)) and math.isfinite(residual_scale)
                and residual_scale > 0):
            raise ValueError(f"residual_scale must be a finite number > 0; got {residual_scale!r}")
        return MLP(sizes, activation, output, init, rng, dtype, sigma_w2, sigma_b2)
    return BlockMLP(sizes, activation, output, init, rng, dtype, sigma_w2, sigma_b2,
                    residual=residual,
                    residual_scale=residual_scale, norm=norm)
