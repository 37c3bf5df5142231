"""Benchmark 4: arithmetic efficiency of a wide network, where matrix products dominate.

Our trainer's achieved GFLOP/s per epoch against ``np.matmul`` alone on exactly the same
shapes, measured interleaved in the same run. FLOPs per epoch count ``2 m n_in n_out`` per
matrix product, three products per layer (forward ``W a``, ``dW = delta a^T``, ``dX = W^T delta``)
minus the input layer's ``dX``, which backpropagation does not need. Ratio = ours / matmul
GFLOP/s, i.e. the share of the epoch spent at BLAS speed; the rest is element-wise work
(activation, its derivative, bias sums, the loss), the optimizer and the diagnostics.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import (
    Row,
    Sample,
    Table,
    Timer,
    at_least,
    clock_note,
    details,
    fmt_ratio,
    fmt_time,
    interleaved,
    medians,
    primary,
    profile_top,
)
from benchmarks.workloads import Workload, run_ours, run_steady

GOAL = 0.7

WIDE = Workload(
    key="wide", label="2 -> 4 x 1024 tanh -> 1, 4096 samples, full batch",
    dataset="spiral", n_per_class=2048, noise=0.3, hidden=(1024,) * 4, activation="tanh",
    output="sigmoid_bce", lr=0.01, batch_size=None, epochs=3, quick_epochs=3,
    quick_n_per_class=32,
)
QUICK_WIDE = Workload(
    key="wide", label="2 -> 4 x 64 tanh -> 1 (quick)", dataset="spiral", n_per_class=32,
    noise=0.3, hidden=(64,) * 4, activation="tanh", output="sigmoid_bce", lr=0.01,
    batch_size=None, epochs=3, quick_epochs=3, quick_n_per_class=32,
)


def epoch_flops(sizes: list[int], m: int) -> float:
    flops = 0.0
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        products = 2 if l == 0 else 3
        flops += products * 2.0 * m * n_in * n_out
    return flops


class MatmulEpoch:
    """The matrix products of one epoch (forward, dW, dX), on preallocated arrays."""

    def __init__(self, sizes: list[int], m: int, dtype: type) -> None:
        rng = np.random.default_rng(0)
        self.layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            W = rng.standard_normal((n_out, n_in)).astype(dtype)
            a_prev = rng.standard_normal((n_in, m)).astype(dtype)
            z = np.empty((n_out, m), dtype)
            delta = rng.standard_normal((n_out, m)).astype(dtype)
            dW = np.empty_like(W)
            dX = np.empty_like(a_prev)
            self.layers.append((W, a_prev, z, delta, dW, dX))

    def __call__(self) -> Sample:
        with Timer() as timer:
            for W, a_prev, z, _, _, _ in self.layers:
                np.matmul(W, a_prev, out=z)
            for l in range(len(self.layers) - 1, -1, -1):
                W, a_prev, _, delta, dW, dX = self.layers[l]
                np.matmul(delta, a_prev.T, out=dW)
                if l > 0:
                    np.matmul(W.T, delta, out=dX)
        return timer.sample


def run(quick: bool = False, threads: int = 1, repeats: int | None = None) -> Table:
    wl = QUICK_WIDE if quick else WIDE
    table = Table(
        key="flops",
        title="4. Arithmetic efficiency (wide network)",
        what=(
            f"{wl.label}: our epoch (forward, backward, update; diagnostics on and off) against "
            "`np.matmul` alone on the same shapes (the epoch's 3 products per layer, minus the "
            "input layer's unneeded dX), interleaved. Ratio = our GFLOP/s / matmul GFLOP/s."
        ),
        ratio_label="ours/matmul",
    )
    repeats = repeats if repeats is not None else (1 if quick else 3)
    epochs = wl.n_epochs(quick)
    for dtype in (np.float64, np.float32):
        ds = wl.data(dtype, quick)
        sizes, m = wl.sizes(ds), ds.n_train
        flops = epoch_flops(sizes, m)
        reference = MatmulEpoch(sizes, m, dtype)

        def ours(diagnostics: bool, ds=ds, dtype=dtype) -> Sample:
            return run_steady(wl, ds, dtype, diagnostics=diagnostics, epochs=epochs)

        times = interleaved(
            {"on": lambda: ours(True), "off": lambda: ours(False), "matmul": reference},
            repeats, warmup=0,
        )
        ref_s = medians(times["matmul"])
        ref = primary(ref_s, threads)
        dname = np.dtype(dtype).name
        for label, key in (("diag on", "on"), ("diag off", "off")):
            ours_s = medians(times[key])
            seconds = primary(ours_s, threads)
            row = table.add(Row(
                case=f"{dname}, {label}",
                ratio=ref / seconds,
                goal=at_least(GOAL),
                cells={
                    "GFLOP/epoch": f"{flops / 1e9:.3g}",
                    "ours per epoch": fmt_time(seconds),
                    "ours GFLOP/s": f"{flops / seconds / 1e9:.3g}",
                    "matmul alone": fmt_time(ref),
                    "matmul GFLOP/s": f"{flops / ref / 1e9:.3g}",
                    "wall ratio": fmt_ratio(ref_s.wall / ours_s.wall),
                },
                values={"ours_s": seconds, "matmul_s": ref, "gflop": flops / 1e9,
                        "wall_ratio": ref_s.wall / ours_s.wall},
            ))
            if row.status != "PASS" and not quick:
                table.notes.append(details(
                    f"cProfile of our {dname} epoch, {label}",
                    profile_top(lambda ds=ds, dtype=dtype, d=(label == "diag on"): run_ours(
                        wl, ds, dtype, diagnostics=d, epochs=1), n=10)))
    table.notes.insert(0, (
        f"{repeats} interleaved repeats, medians; ours = the steady-state epochs of a "
        f"{epochs}-epoch run (timed between history rows by a callback, so building the "
        "network, allocating and first touching the workspaces and the final probe pass are "
        "left out). " + clock_note(threads)
    ))
    return table
