"""Optimizers: each owns its state and updates a network's flat parameter vector in place.

With g the gradient (plus ``weight_decay * w`` on weights, never on biases) and lr the step size:

- ``gd`` / ``sgd``: w <- w - lr g. The two differ only in the batch the trainer feeds them
  (``gd``: the whole training set each step, the notebook's rule; ``sgd``: shuffled mini-batches).
- ``momentum``: v <- mu v + g; w <- w - lr v, or with ``nesterov`` w <- w - lr (g + mu v)
  (PyTorch's formulation).
- ``adam``: m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
  w <- w - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)   (Kingma & Ba 2015).

State vectors have the parameter vector's shape (P,) and are allocated on the first step.

Gradient clipping (Pascanu et al. 2013; ``clip_norm``, any optimizer, none by default): before
the update (and before weight decay), with ||g|| the global L2 norm over all P parameters,
g <- g * c / (||g|| + 1e-6) where c / (||g|| + 1e-6) < 1, PyTorch's ``clip_grad_norm_``. Each
step's pre-clip norm and whether it clipped are counted until the trainer takes them
(:meth:`Optimizer.take_clip_stats`, once an epoch).
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from backprop_lab.engine.network import MLP

Array = np.ndarray


class Optimizer:
    """Base class: ``step(net)`` applies one update from ``net.grads`` to ``net.params``.

    Subclasses implement ``_update(params, grads)`` on the flat vectors (P,).
    """

    name = ""
    state_names: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be a positive number; got lr={lr!r}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.t = 0
        self.state: dict[str, Array] = {}
        self.clip_norm: float | None = None
        self._clip_max, self._clip_steps, self._clip_count = -math.inf, 0, 0

    def set_clip_norm(self, clip_norm: float | None) -> None:
        """Clip the global gradient norm to ``clip_norm`` before each update (None: never)."""
        if clip_norm is not None and not (isinstance(clip_norm, (int, float))
                                          and math.isfinite(clip_norm) and clip_norm > 0):
            raise ValueError(f"clip_norm must be a positive number or None (no clipping); "
                             f"got {clip_norm!r}")
        self.clip_norm = None if clip_norm is None else float(clip_norm)

    def clip(self, grads: Array) -> float:
        """Scale ``grads`` (P,) in place to global norm ``clip_norm`` if larger; returns the
        pre-clip norm."""
        norm = math.sqrt(float(np.dot(grads, grads)))
        coef = self.clip_norm / (norm + 1e-6)
        self._clip_steps += 1
        self._clip_max = max(self._clip_max, norm) if norm == norm else math.nan
        if coef < 1.0:
            grads *= coef
            self._clip_count += 1
        return norm

    def take_clip_stats(self) -> tuple[float, float]:
        """(largest pre-clip global norm, fraction of steps clipped) since the last call
        (NaN, NaN without steps)."""
        steps = self._clip_steps
        stats = (self._clip_max, self._clip_count / steps) if steps else (math.nan, math.nan)
        self._clip_max, self._clip_steps, self._clip_count = -math.inf, 0, 0
        return stats

    def step(self, net: MLP) -> None:
        self.t += 1
        if len(self.state) < len(self.state_names):
            self.state = {name: np.zeros_like(net.params) for name in self.state_names}
        grads = net.grads
        if self.clip_norm is not None:
            self.clip(grads)
        if self.weight_decay:
            # L2 decay on the weights only (biases are not decayed): g + wd * w.
            grads = grads.copy()
            nw = net.n_weights
            grads[:nw] += self.weight_decay * net.params[:nw]
        self._update(net.params, grads)

    def _update(self, params: Array, grads: Array) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        extra = f", weight_decay={self.weight_decay}" if self.weight_decay else ""
        extra += f", clip_norm={self.clip_norm}" if self.clip_norm is not None else ""
        return f"{type(self).__name__}(lr={self.lr}{extra})"


class GradientDescent(Optimizer):
    name = "gd"

    def _update(self, params: Array, grads: Array) -> None:
        params -= self.lr * grads


class SGD(GradientDescent):
    name = "sgd"


class Momentum(Optimizer):
    name = "momentum"
    state_names = ("velocity",)

    def __init__(
        self, lr: float, momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0
    ) -> None:
        super().__init__(lr, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, params: Array, grads: Array) -> None:
        v = self.state["velocity"]
        v *= self.momentum
        v += grads
        if self.nesterov:
            params -= self.lr * (grads + self.momentum * v)
        else:
            params -= self.lr * v

    def __repr__(self) -> str:
        nesterov = ", nesterov" if self.nesterov else ""
        return f"Momentum(lr={self.lr}, momentum={self.momentum}{nesterov})"


class Adam(Optimizer):
    name = "adam"
    state_names = ("m", "v")

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{label} must be in [0, 1); got {beta!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive; got {eps!r}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _update(self, params: Array, grads: Array) -> None:
        m, v = self.state["m"], self.state["v"]
        m *= self.beta1
        m += (1.0 - self.beta1) * grads
        v *= self.beta2
        v += (1.0 - self.beta2) * (grads * grads)
        m_hat_scale = self.lr / (1.0 - self.beta1**self.t)
        v_hat_scale = 1.0 / (1.0 - self.beta2**self.t)
        params -= (m_hat_scale * m) / (np.sqrt(v_hat_scale * v) + self.eps)


OPTIMIZERS: dict[str, type[Optimizer]] = {o.name: o for o in (GradientDescent, SGD, Momentum, Adam)}


def hyper_parameters(name: str) -> list[str]:
    """The keyword arguments optimizer ``name`` takes (``lr`` first)."""
    signature = inspect.signature(OPTIMIZERS[name].__init__)
    return [p for p in signature.parameters if p != "self"]


def make_optimizer(name: str, clip_norm: float | None = None, **hyper: float | bool) -> Optimizer:
    """Build optimizer ``name`` from its registry entry and hyper-parameters, clipping the
    global gradient norm to ``clip_norm`` (None: no clipping).

    A ValueError names an unknown optimizer (with the valid choices), an unknown hyper-parameter
    (with the ones this optimizer takes) or a bad value.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")
    accepted = hyper_parameters(name)
    unknown = sorted(set(hyper) - set(accepted))
    if unknown:
        raise ValueError(f"optimizer {name!r} has no hyper-parameter {', '.join(unknown)}; "
                         f"it takes {', '.join(accepted)}")
    optimizer = OPTIMIZERS[name](**hyper)
    optimizer.set_clip_norm(clip_norm)
    return optimizer
