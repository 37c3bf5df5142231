"""What theory predicts for gradient flow at initialization (Glorot & Bengio 2010; He et al. 2015).

In the linear regime (small pre-activations), going one layer down from layer l+1 to layer l, the
back-propagated error delta^l = (W^{l+1}^T delta^{l+1}) * f'(z^l) changes its variance by

    Var(delta^l) / Var(delta^{l+1}) = n_{l+1} Var(W^{l+1}) E[f'(z^l)^2]

where n_{l+1} (the width of layer l+1, the fan-out of W^{l+1}) is the number of terms in each sum.
Its square root is the per-layer factor of ``delta_std``. For equal widths: tanh + standard init
0.577, sigmoid + standard 0.144, relu + xavier_uniform 0.707, relu + he 1.0.
"""

from __future__ import annotations

import math

from backprop_lab.engine.activations import get_activation
from backprop_lab.engine.initializers import resolve_init, weight_variance


def backprop_std_factor(activation: str, init: str, fan_in: int, fan_out: int) -> float:
    """Predicted ratio delta_std(layer l) / delta_std(layer l+1) at initialization.

    Args:
        activation: hidden activation of layer l.
        init: initializer of W^{l+1} (``auto`` is resolved for the activation).
        fan_in: n_l, the width of layer l (the fan-in of W^{l+1}).
        fan_out: n_{l+1}, the width of layer l+1 (the fan-out of W^{l+1}).
    """
    gain = get_activation(activation).linear_gain  # a ValueError for an unknown name
    var_w = weight_variance(resolve_init(activation, init), fan_in, fan_out)
    return math.sqrt(fan_out * var_w * gain)


__all__ = ["backprop_std_factor", "resolve_init"]
