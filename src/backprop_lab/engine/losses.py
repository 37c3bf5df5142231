"""Output layers fused with their losses.

Shapes: logits ``z`` and targets ``Y`` are (k, m): k outputs, m samples (features x samples, as
everywhere in backprop_lab). Every loss is a mean over the m samples, computed from the logits
with log-sum-exp tricks rather than by clipping probabilities:

- ``sigmoid_bce``: p = sigmoid(z), L = (1/m) sum_i sum_k [softplus(z) - y z]
  (= binary cross-entropy of p), and dL_i/dz = p - y.
- ``softmax_ce``: p = softmax(z) over the k rows, L = -(1/m) sum_i sum_k y log p
  with log p = z - logsumexp(z), and dL_i/dz = p - y (y one-hot, k >= 2).
- ``mse``: p = z (identity output), L = (1/2m) sum_i ||p - y||^2, and dL_i/dz = p - y.

``delta`` returns the per-sample error dL_i/dz (the notebook's ``a - y``); the network divides by
m when it forms dW, so the scale of the back-propagated error does not depend on the batch size.
``derivative`` is the element-wise slope dp/dz used by the saturation diagnostic of the output
layer (p(1-p) for sigmoid and for the diagonal of softmax, 1 for the identity).
"""

from __future__ import annotations

import numpy as np

from backprop_lab.engine.activations import sigmoid

Array = np.ndarray


class OutputHead:
    """Base class: an output non-linearity with its loss, error and accuracy."""

    name: str = ""
    max_derivative: float = 1.0

    def activate(self, z: Array, out: Array | None = None) -> Array:
        """Output p (k, m) from logits z (k, m)."""
        raise NotImplementedError

    def loss(self, z: Array, p: Array, Y: Array) -> float:
        """Mean loss over the m samples, from logits z, outputs p and targets Y, all (k, m)."""
        raise NotImplementedError

    def delta(self, p: Array, Y: Array, out: Array | None = None) -> Array:
        """Per-sample error dL_i/dz = p - Y, shape (k, m)."""
        return np.subtract(p, Y, out=out)

    def derivative(self, p: Array, out: Array | None = None) -> Array:
        """Element-wise slope dp/dz, shape (k, m)."""
        out = np.subtract(1.0, p, out=out)
        out *= p
        return out

    def accuracy(self, p: Array, Y: Array) -> float:
        """Fraction of samples classified correctly: threshold 0.5 for one output, else argmax."""
        if p.shape[0] == 1:
            return float(np.count_nonzero((p > 0.5) == (Y > 0.5))) / p.shape[1]
        return float(np.count_nonzero(p.argmax(axis=0) == Y.argmax(axis=0))) / p.shape[1]

    def check_targets(self, Y: Array) -> None:
        """Raise ValueError if this loss cannot take targets Y (k, m)."""
        if not np.all(np.isfinite(Y)):
            raise ValueError(f"{self.name}: targets contain NaN or inf")

    def __repr__(self) -> str:
        return self.name


class SigmoidBCE(OutputHead):
    name = "sigmoid_bce"
    max_derivative = 0.25

    def activate(self, z: Array, out: Array | None = None) -> Array:
        return sigmoid(z, out=out)

    def loss(self, z: Array, p: Array, Y: Array) -> float:
        # softplus(z) - y z = max(z, 0) - y z + log1p(exp(-|z|)): exact for every finite z.
        per_entry = np.maximum(z, 0.0) - Y * z + np.log1p(np.exp(-np.abs(z)))
        return float(per_entry.sum()) / z.shape[1]

    def check_targets(self, Y: Array) -> None:
        super().check_targets(Y)
        if Y.size and (Y.min() < 0 or Y.max() > 1):
            raise ValueError(
                f"sigmoid_bce needs targets in [0, 1]; got values in [{Y.min()}, {Y.max()}]"
            )


class SoftmaxCE(OutputHead):
    name = "softmax_ce"
    max_derivative = 0.25

    def activate(self, z: Array, out: Array | None = None) -> Array:
        shifted = z - z.max(axis=0, keepdims=True)
        e = np.exp(shifted, out=out)
        e /= e.sum(axis=0, keepdims=True)
        return e

    def loss(self, z: Array, p: Array, Y: Array) -> float:
        zmax = z.max(axis=0, keepdims=True)
        log_p = z - (zmax + np.log(np.exp(z - zmax).sum(axis=0, keepdims=True)))
        return -float(np.vdot(Y, log_p)) / z.shape[1]

    def check_targets(self, Y: Array) -> None:
        super().check_targets(Y)
        if Y.shape[0] < 2:
            raise ValueError(
                "softmax_ce needs one-hot targets with at least 2 rows (classes); "
                f"got {Y.shape[0]} row(s): use sigmoid_bce for a binary task"
            )
        if Y.size and (Y.min() < 0 or not np.allclose(Y.sum(axis=0), 1.0)):
            raise ValueError(
                "softmax_ce needs one-hot (or probability) targets: columns summing to 1"
            )


class MSE(OutputHead):
    name = "mse"
    max_derivative = 1.0

    def activate(self, z: Array, out: Array | None = None) -> Array:
        if out is None:
            return z.copy()
        np.copyto(out, z)
        return out

    def loss(self, z: Array, p: Array, Y: Array) -> float:
        diff = p - Y
        return 0.5 * float(np.vdot(diff, diff)) / z.shape[1]

    def derivative(self, p: Array, out: Array | None = None) -> Array:
        if out is None:
            return np.ones_like(p)
        out.fill(1.0)
        return out


OUTPUTS: dict[str, type[OutputHead]] = {h.name: h for h in (SigmoidBCE, SoftmaxCE, MSE)}


def get_output(name: str) -> OutputHead:
    """Look an output head up by name; a ValueError names the bad value and the valid choices."""
    try:
        return OUTPUTS[name]()
    except KeyError:
        raise ValueError(
            f"unknown output/loss {name!r}; valid choices: {', '.join(OUTPUTS)}"
        ) from None
