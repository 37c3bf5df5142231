"""Fully-connected networks: forward pass and backpropagation.

Convention (the whole package): **features x samples**. An input batch X is (d, m), layer l
(l = 1..L, layer 1 fed by the input) has W^l of shape (n_l, n_{l-1}) and b^l of shape (n_l, 1):

    z^l = W^l a^{l-1} + b^l,   a^l = f(z^l) for l < L,   p = a^L = output(z^L),   a^0 = X

Backpropagation, with delta^l = dL_i/dz^l the per-sample error (k = n_L rows at the top):

    delta^L = p - Y                                   (fused output + loss, see losses.py)
    delta^l = (W^{l+1}^T delta^{l+1}) * f'(z^l)       for l < L
    dL/dW^l = (1/m) delta^l a^{l-1}^T,   dL/db^l = (1/m) sum_i delta^l_i

Parameters live in one flat vector ``params`` (all weights first, layer by layer, then all
biases), so that an optimizer updates every parameter with a handful of vector operations;
``weights[l]`` and ``biases[l]`` are views into it, and ``grads`` has the same layout.

Intermediate arrays are written into a :class:`Workspace`: the activations of all layers stacked
row-wise in a (U, m) buffer, U = n_1 + ... + n_L, and the errors and derivatives in scratch
buffers of the widest layer, reused layer after layer, so that memory stays near the activations'
size. ``backward`` hands each layer's error and derivative to an optional callback while they
exist (the diagnostics reduce them there, see diagnostics.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from backprop_lab.engine.activations import Activation, get_activation
from backprop_lab.engine.initializers import (
    RandomSource,
    check_variances,
    draw_biases,
    get_initializer,
    resolve_init,
)
from backprop_lab.engine.limits import budget, gib
from backprop_lab.engine.losses import OutputHead, get_output

Array = np.ndarray


class Workspace:
    """Buffers of one forward/backward pass over m samples.

    ``A`` (U, m), U = n_1 + ... + n_L, holds the activations of all layers stacked row-wise,
    layer l in rows ``MLP.layer_rows(l)`` (the output p in the last k rows): backpropagation
    needs them all. The per-sample errors delta^l and derivatives f'(z^l) are needed one layer at
    a time: errors alternate between two (max width, m) scratch buffers and derivatives use a
    third. ``z_out`` (k, m) holds the output logits, ``X`` (d, m) the input of the last forward
    pass.
    """

    def __init__(self, widths: list[int], m: int, dtype: np.dtype) -> None:
        self.m = m
        self.offsets = np.cumsum([0, *widths])
        U, widest = int(self.offsets[-1]), max(widths)
        self.A = np.empty((U, m), dtype=dtype)
        self._deltas = (np.empty((widest, m), dtype=dtype), np.empty((widest, m), dtype=dtype))
        self._fprime = np.empty((widest, m), dtype=dtype)
        self.z_out = np.empty((widths[-1], m), dtype=dtype)
        self.X: Array | None = None

    def delta(self, l: int) -> Array:
        """Buffer (n_l, m) for the errors of layer l (0-based)."""
        return self._deltas[l % 2][: int(self.offsets[l + 1] - self.offsets[l])]

    def fprime(self, l: int) -> Array:
        """Buffer (n_l, m) for the derivatives f'(z) of layer l (0-based)."""
        return self._fprime[: int(self.offsets[l + 1] - self.offsets[l])]


class MLP:
    """A fully-connected network ``sizes[0] -> ... -> sizes[-1]``.

    Args:
        sizes: layer widths, input first and output last, e.g. [2, 16, 8, 1].
        activation: hidden activation name (see activations.ACTIVATIONS).
        output: output head and loss name (see losses.OUTPUTS).
        init: initializer name (see initializers.INIT_CHOICES); ``auto`` is resolved.
        rng: random source for the weights (Generator or legacy RandomState).
        dtype: float64 (default) or float32.
        sigma_w2: sigma_w^2 = fan_in Var(W) of ``gaussian`` and ``orthogonal`` (None: 1); the
            named initializers have their own and take None.
        sigma_b2: bias variance: biases drawn N(0, sigma_b2) after all weights (0: zeros).
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
    ) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"sizes needs an input and an output width; got {sizes}")
        if any(s < 1 for s in sizes):
            raise ValueError(f"every layer width must be at least 1; got {sizes}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtype must be float64 or float32; got {self.dtype}")
        self.sizes = sizes
        self.activation: Activation = get_activation(activation)
        self.head: OutputHead = get_output(output)
        self.init = resolve_init(activation, init)
        self.sigma_w2, self.sigma_b2 = check_variances(self.init, sigma_w2, sigma_b2)
        self.n_layers = len(sizes) - 1

        fans = list(zip(sizes[:-1], sizes[1:]))
        n_weights = sum(i * o for i, o in fans)
        # Parameters, gradients and up to two optimizer states, plus the diagnostics' copy.
        needed = 5 * self.dtype.itemsize * (n_weights + sum(sizes[1:]) + self._extra_params(sizes))
        if needed > budget():
            raise ValueError(
                f"a network with layer widths {sizes} has {n_weights + sum(sizes[1:])} "
                f"parameters, which need {gib(needed)} with their gradients and optimizer "
                f"state: more than a quarter of this machine's memory ({gib(budget() * 4)})")
        self.n_weights = n_weights
        # Parameters beyond weights and biases (normalization gains and shifts: blocks.py) follow
        # the biases in the same flat vector.
        n_extra = self._extra_params(sizes)
        self.params = np.zeros(n_weights + sum(sizes[1:]) + n_extra, dtype=self.dtype)
        self.grads = np.zeros_like(self.params)
        # Offsets of each layer's block in the flat weight segment and in the stacked units.
        self.weight_offsets = np.cumsum([0] + [i * o for i, o in fans])
        self.unit_offsets = np.cumsum([0] + sizes[1:])
        self.n_units = int(self.unit_offsets[-1])
        self._rows = [slice(int(a), int(b))
                      for a, b in zip(self.unit_offsets[:-1], self.unit_offsets[1:])]
        self.weights: list[Array] = []
        self.biases: list[Array] = []
        self.grad_weights: list[Array] = []
        self.grad_biases: list[Array] = []
        for l, (fan_in, fan_out) in enumerate(fans):
            w0, w1 = self.weight_offsets[l], self.weight_offsets[l + 1]
            b0, b1 = n_weights + self.unit_offsets[l], n_weights + self.unit_offsets[l + 1]
            self.weights.append(self.params[w0:w1].reshape(fan_out, fan_in))
            self.biases.append(self.params[b0:b1].reshape(fan_out, 1))
            self.grad_weights.append(self.grads[w0:w1].reshape(fan_out, fan_in))
            self.grad_biases.append(self.grads[b0:b1].reshape(fan_out, 1))

        rng = np.random.default_rng() if rng is None else rng
        draw = get_initializer(self.init, self.sigma_w2)
        for W, (fan_in, fan_out) in zip(self.weights, fans):
            W[...] = draw(rng, fan_in, fan_out)
        if self.sigma_b2 > 0:
            for b in self.biases:
                b[...] = draw_biases(rng, b.shape[0], self.sigma_b2)
        self._workspaces: dict[int, Workspace] = {}

    #: Running statistics that ``forward`` updates when this is set (batch normalization,
    #: blocks.py; the training loop sets it around the passes whose batch it steps on).
    update_running_stats = False

    # -- structure -----------------------------------------------------------------------------
    def _extra_params(self, sizes: list[int]) -> int:
        """Parameters after the biases in the flat vector (none for the plain network)."""
        return 0

    def layer_rows(self, l: int) -> slice:
        """Rows of layer l (0-based) in a workspace's stacked (U, m) buffers."""
        return self._rows[l]

    def workspace(self, m: int) -> Workspace:
        """A cached workspace for batches of m samples."""
        ws = self._workspaces.get(m)
        if ws is None:
            ws = self._workspaces[m] = self.new_workspace(m)
        return ws

    def new_workspace(self, m: int) -> Workspace:
        """A new workspace for m samples."""
        return Workspace(self.sizes[1:], m, self.dtype)

    @property
    def n_params(self) -> int:
        return self.params.size

    # -- passes --------------------------------------------------------------------------------
    def forward(self, X: Array, ws: Workspace | None = None,
                on_preact: Callable[[int, Array], None] | None = None) -> Array:
        """Forward pass over X (d, m); returns the output p (k, m), a view into ``ws.A``.

        ``on_preact(l, z)``, if given, sees each layer's pre-activations z (n_l, m) (0-based l;
        the last: the output logits) before the activation overwrites them in place.
        """
        if X.ndim != 2 or X.shape[0] != self.sizes[0]:
            raise ValueError(f"{self!r} takes inputs of shape ({self.sizes[0]}, m); got {X.shape}")
        ws = self.workspace(X.shape[1]) if ws is None else ws
        ws.X = X
        a = X
        last = self.n_layers - 1
        for l in range(self.n_layers):
            rows = self.layer_rows(l)
            if l < last:
                z = np.matmul(self.weights[l], a, out=ws.A[rows])
                z += self.biases[l]
                if on_preact is not None:
                    on_preact(l, z)
                a = self.activation.fn(z, out=z)  # in place: f' is computed from a
            else:
                z = np.matmul(self.weights[l], a, out=ws.z_out)
                z += self.biases[l]
                if on_preact is not None:
                    on_preact(l, z)
                a = self.head.activate(z, out=ws.A[rows])
        return a

    #: Forward pass in evaluation mode (the validation metrics), ``forward_eval(X, ws)``: for
    #: the plain network ``forward`` itself; batch normalization (blocks.py) uses its running
    #: statistics there.
    forward_eval = forward

    def backward(
        self,
        Y: Array,
        ws: Workspace,
        on_layer: Callable[[int, Array, Array | None], None] | None = None,
    ) -> Array:
        """Backpropagate targets Y (k, m) through the pass cached in ``ws``.

        Fills ``self.grads`` (and so ``grad_weights``/``grad_biases``) with dL/dparams of the mean
        loss. Each layer's per-sample error delta (n_l, m) and derivative f'(z) (n_l, m) live in
        the workspace's scratch buffers only until the next layer down reuses them:
        ``on_layer(l, delta, fprime)``, if given, is called for each layer l from the top down as
        soon as its error is final (fprime is None for the output layer; the callback may
        overwrite fprime). Returns ``self.grads``.
        """
        X = ws.X
        m = ws.m
        L = self.n_layers
        rows = self.layer_rows(L - 1)
        delta = self.head.delta(ws.A[rows], Y, out=ws.delta(L - 1))
        if on_layer is not None:
            on_layer(L - 1, delta, None)
        for l in range(L - 1, -1, -1):
            a_prev = X if l == 0 else ws.A[self.layer_rows(l - 1)]
            np.matmul(delta, a_prev.T, out=self.grad_weights[l])
            np.add.reduce(delta, axis=1, keepdims=True, out=self.grad_biases[l])
            if l > 0:
                fprime = self.activation.grad(a_prev, out=ws.fprime(l - 1))
                delta = np.matmul(self.weights[l].T, delta, out=ws.delta(l - 1))
                delta *= fprime
                if on_layer is not None:
                    on_layer(l - 1, delta, fprime)
        self.grads *= 1.0 / m
        return self.grads

    def loss(self, ws: Workspace, Y: Array) -> float:
        """Mean loss of the pass cached in ``ws`` against targets Y (k, m)."""
        return self.head.loss(ws.z_out, ws.A[self.layer_rows(self.n_layers - 1)], Y)

    def accuracy(self, ws: Workspace, Y: Array) -> float:
        return self.head.accuracy(ws.A[self.layer_rows(self.n_layers - 1)], Y)

    def predict_proba(self, X: Array) -> Array:
        """Output p (k, m) for inputs X (d, m), in fresh memory."""
        return self.forward(X, self.new_workspace(X.shape[1])).copy()

    def gradients(self, X: Array, Y: Array) -> tuple[list[Array], list[Array], list[Array]]:
        """One forward and backward pass; returns copies of (dW per layer, db per layer, delta per
        layer), shapes (n_l, n_{l-1}), (n_l, 1) and (n_l, m)."""
        deltas: list[Array] = [np.empty(0)] * self.n_layers

        def keep(l: int, delta: Array, fprime: Array | None) -> None:
            deltas[l] = delta.copy()

        ws = self.new_workspace(X.shape[1])
        self.forward(X, ws)
        self.backward(Y, ws, keep)
        return (
            [g.copy() for g in self.grad_weights],
            [g.copy() for g in self.grad_biases],
            deltas,
        )

    def __repr__(self) -> str:
        arch = "-".join(str(s) for s in self.sizes)
        extra = "" if self.dtype == np.float64 else f", {self.dtype.name}"
        init = self.init if self.sigma_w2 is None else f"{self.init} {self.sigma_w2:g}"
        init += f", sigma_b2 {self.sigma_b2:g}" if self.sigma_b2 else ""
        return f"MLP({arch}, {self.activation.name}, {init}{extra})"
