"""What the Jacobian spectrum (engine/jacobian.py) costs next to training.

    python -m benchmarks.jacobian_cost          # prints a markdown table

For a few deep tanh networks on digits (64 features, 1438 training samples): the median time of
one spectrum on 4 probe inputs (products and SVDs of every layer) against the median time of one
training epoch (3-epoch runs divided by 3; mini-batch SGD, batch 32, per-layer diagnostics on),
measured interleaved (spectrum, epoch, spectrum, ...) on one BLAS thread. A run pays one spectrum at
initialization, one every ``histogram_every`` epochs and one at the end: with histogram_every
= 5 on a 20-epoch run, 5 spectra.
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from backprop_lab.engine.datasets import load_dataset
from backprop_lab.engine.jacobian import jacobian_spectrum, probe_inputs
from backprop_lab.engine.network import MLP
from backprop_lab.engine.optimizers import make_optimizer
from backprop_lab.engine.training import train

SHAPES = ((16, 64), (48, 64), (96, 64))  # (depth, width)
REPEATS = 5


def main() -> None:
    data = load_dataset("digits", rng=np.random.default_rng(0))
    X = probe_inputs(data.X_train, 4)
    rows = ["| depth x width | spectrum (4 probes) | one epoch | spectrum / epoch | "
            "5 spectra / 20 epochs |", "|---|---|---|---|---|"]
    with threadpool_limits(1):
        for depth, width in SHAPES:
            net = MLP([64] + [width] * depth + [10], "tanh", "softmax_ce", "orthogonal",
                      np.random.default_rng(0), sigma_w2=1.0)
            opt = make_optimizer("sgd", lr=0.01)
            spectra, epochs = [], []
            for _ in range(REPEATS):
                tic = time.perf_counter()
                jacobian_spectrum(net, X)
                spectra.append(time.perf_counter() - tic)
                tic = time.perf_counter()
                # 3 epochs and 4 measured rows, per epoch (the extra row is one forward pass
                # over the data: it makes the epoch look a few percent dearer)
                train(net, data, opt, epochs=3, batch_size=32, histogram_every=0)
                epochs.append((time.perf_counter() - tic) / 3)
            s, e = float(np.median(spectra)), float(np.median(epochs))
            rows.append(f"| {depth} x {width} | {s * 1e3:.0f} ms | {e * 1e3:.0f} ms | "
                        f"{s / e:.2f} | {5 * s / (20 * e):.1%} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
