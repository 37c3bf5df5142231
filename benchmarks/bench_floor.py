"""Benchmark 7: the floor of a numpy engine against PyTorch on the trainer benchmark's shapes.

Every epoch of a multilayer perceptron trained by backpropagation makes, for each layer l with
weights W_l (n_l, n_{l-1}) and a batch of m samples, at least these operations:

    forward   z_l = W_l @ a_{l-1}           matmul (n_l, n_{l-1}) x (n_{l-1}, m)
              a_l = f(z_l)                  the activation on (n_l, m), hidden layers
    backward  dW_l = delta_l @ a_{l-1}.T    matmul (n_l, m) x (m, n_{l-1})
              delta_{l-1} = W_l.T @ delta_l matmul (n_{l-1}, n_l) x (n_l, m), l > 1

No numpy program computing the same gradients can skip them, whatever it does around them (the
elementwise products of the backward pass, biases, the loss and every diagnostic come on top).
This benchmark times exactly that sequence, on preallocated arrays (``out=``), once with numpy
(``np.matmul``, ``np.tanh`` / ``np.maximum``) and once with torch (``torch.matmul``,
``torch.tanh`` / ``torch.relu``), interleaved with our whole trainer and torch's whole
training loop (benchmark 1's two sides). The row's ratio is our epoch / the numpy floor (how
close the engine is to the floor); `numpy floor / torch` is the best ratio against PyTorch any
numpy engine could reach on that row: above the trainer benchmark's goal, the goal cannot be
met in numpy and this row is the proof.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from benchmarks.common import (
    TORCH_MISSING,
    Row,
    Sample,
    Table,
    Timer,
    clock_note,
    fmt_ratio,
    fmt_time,
    has_module,
    interleaved,
    medians,
    primary,
)
from benchmarks.workloads import DEEP, WIDE_MINIBATCH, Workload, run_ours

DTYPES = (np.float64, np.float32)


def batch_sizes(n: int, batch_size: int | None) -> list[int]:
    """The batch sizes of one epoch over n samples (one batch of n when full batch)."""
    if batch_size is None:
        return [n]
    return [min(batch_size, n - s) for s in range(0, n, batch_size)]


def floor_ops(sizes: list[int], batches: list[int], activation: str, dtype: type,
              lib: str) -> Callable[[], None]:
    """One epoch of the unavoidable operations (module docstring), with numpy or torch."""
    rng = np.random.default_rng(0)
    L = len(sizes) - 1
    distinct = sorted(set(batches))
    W = [rng.standard_normal((sizes[l + 1], sizes[l])).astype(dtype) * 0.1 for l in range(L)]
    # per batch size: activations a_0..a_L (n_l, m), errors delta_1..delta_L, weight grads
    A = {m: [rng.standard_normal((n, m)).astype(dtype) for n in sizes] for m in distinct}
    D = {m: [np.empty((n, m), dtype) for n in sizes] for m in distinct}
    G = [np.empty_like(w) for w in W]
    if lib == "torch":
        import torch

        conv = torch.from_numpy
        W, G = [conv(w) for w in W], [conv(g) for g in G]
        A = {m: [conv(a) for a in v] for m, v in A.items()}
        D = {m: [conv(d) for d in v] for m, v in D.items()}
        matmul = torch.matmul
        act = (torch.tanh if activation == "tanh"
               else (lambda z, out: torch.clamp_min(z, 0.0, out=out)))

        def transpose(x):
            return x.t()
    else:
        matmul = np.matmul
        act = (np.tanh if activation == "tanh"
               else (lambda z, out: np.maximum(z, 0.0, out=out)))

        def transpose(x):
            return x.T

    def epoch() -> None:
        for m in batches:
            a, d = A[m], D[m]
            for l in range(L):
                matmul(W[l], a[l], out=a[l + 1])
                if l < L - 1:
                    act(a[l + 1], out=a[l + 1])
            d[L][...] = a[L]
            for l in range(L, 0, -1):
                matmul(d[l], transpose(a[l - 1]), out=G[l - 1])
                if l > 1:
                    matmul(transpose(W[l - 1]), d[l], out=d[l - 1])

    return epoch


def op_times(n: int, m: int, activation: str, dtype: type, loops: int) -> dict[str, float]:
    """CPU time of one activation call on (n, m) and one (n, n) @ (n, m) matmul, numpy and
    torch, best of 5 runs of ``loops`` calls."""
    import time

    import torch

    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, m)).astype(dtype)
    w = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty_like(z)
    tz, tw, tout = torch.from_numpy(z), torch.from_numpy(w), torch.from_numpy(out)
    np_act = np.tanh if activation == "tanh" else (lambda x, out: np.maximum(x, 0.0, out=out))
    t_act = (torch.tanh if activation == "tanh"
             else (lambda x, out: torch.clamp_min(x, 0.0, out=out)))
    calls = {
        "np_act": lambda: np_act(z, out=out),
        "torch_act": lambda: t_act(tz, out=tout),
        "np_matmul": lambda: np.matmul(w, z, out=out),
        "torch_matmul": lambda: torch.matmul(tw, tz, out=tout),
    }
    best: dict[str, float] = {}
    for _ in range(5):
        for name, fn in calls.items():
            tic = time.thread_time()
            for _ in range(loops):
                fn()
            t = (time.thread_time() - tic) / loops
            best[name] = min(best.get(name, t), t)
    return best


def run(quick: bool = False, threads: int = 1, workloads: tuple[Workload, ...] = (
        DEEP, WIDE_MINIBATCH), repeats: int | None = None) -> Table:
    table = Table(
        key="floor",
        title="7. The numpy floor against PyTorch (rows of benchmark 1 that miss their goal)",
        what=(
            "Per epoch: the operations no numpy program training this network can avoid "
            "(every layer's forward matmul and activation, and the backward's two matmuls: "
            "see `bench_floor.py`), timed alone with numpy (`numpy floor`) and with torch "
            "(`torch floor`), interleaved with our trainer (diagnostics on) and torch's whole "
            "training loop. Ratio = ours / numpy floor (how close the engine is to the floor). "
            "`numpy floor / torch` is the best ratio to PyTorch any numpy engine could reach: "
            "where it is above benchmark 1's goal, the goal cannot be met with numpy on this "
            "CPU. The last columns time one activation call and one square matmul of the "
            "network's hidden shape alone."
        ),
        ratio_label="ours/numpy floor",
    )
    if not has_module("torch"):
        table.skipped = TORCH_MISSING
        return table
    import torch

    from benchmarks.bench_torch import TorchPeer

    torch.set_num_threads(threads)
    repeats = repeats if repeats is not None else (1 if quick else 5)
    for wl in workloads:
        epochs = wl.n_epochs(quick)
        for dtype in DTYPES:
            ds = wl.data(dtype, quick)
            sizes = wl.sizes(ds)
            batches = batch_sizes(ds.n_train, wl.batch_size)
            floors = {lib: floor_ops(sizes, batches, wl.activation, dtype, lib)
                      for lib in ("numpy", "torch")}

            def floor(lib: str, epochs=epochs, floors=floors) -> Sample:
                fn = floors[lib]
                with Timer() as timer:
                    for _ in range(epochs):
                        fn()
                return timer.sample / epochs

            def ours(wl=wl, ds=ds, dtype=dtype, epochs=epochs) -> Sample:
                sample, _ = run_ours(wl, ds, dtype, diagnostics=True, epochs=epochs)
                return sample / epochs

            def peer(wl=wl, ds=ds, dtype=dtype, epochs=epochs) -> Sample:
                p = TorchPeer(wl, wl.net(ds, dtype, seed=1), ds, dtype)
                with Timer() as timer:
                    p.train(epochs)
                return timer.sample / epochs

            times = interleaved({
                "ours": ours, "numpy": lambda: floor("numpy"), "torch_floor":
                lambda: floor("torch"), "torch": peer}, repeats, warmup=1)
            t = {k: primary(medians(v), threads) for k, v in times.items()}
            hidden = wl.hidden[0]
            ops = op_times(hidden, batches[0], wl.activation, dtype, loops=3 if quick else 20)
            act = "tanh" if wl.activation == "tanh" else "relu"
            shape = f"({hidden}, {batches[0]})"
            table.add(Row(
                case=(f"{wl.key}, {np.dtype(dtype).name} (numpy floor / torch = "
                      f"{fmt_ratio(t['numpy'] / t['torch'])})"),
                ratio=t["ours"] / t["numpy"],
                cells={
                    "ours (diag on)": fmt_time(t["ours"]),
                    "torch": fmt_time(t["torch"]),
                    "numpy floor": fmt_time(t["numpy"]),
                    "torch floor": fmt_time(t["torch_floor"]),
                    "ours/torch": fmt_ratio(t["ours"] / t["torch"]),
                    "numpy floor / torch": fmt_ratio(t["numpy"] / t["torch"]),
                    "numpy floor / torch floor": fmt_ratio(t["numpy"] / t["torch_floor"]),
                    f"{act} {shape}: np / torch": (f"{fmt_time(ops['np_act'])} / "
                                                   f"{fmt_time(ops['torch_act'])}"),
                    f"matmul ({hidden}, {hidden}) @ {shape}: np / torch": (
                        f"{fmt_time(ops['np_matmul'])} / {fmt_time(ops['torch_matmul'])}"),
                },
                values={"ours_s": t["ours"], "torch_s": t["torch"],
                        "numpy_floor_s": t["numpy"], "torch_floor_s": t["torch_floor"],
                        "floor_over_torch": t["numpy"] / t["torch"],
                        **{f"{k}_s": v for k, v in ops.items()}},
            ))
    table.notes.insert(0, (
        f"{repeats} interleaved repeats after a warm-up round, medians. " + clock_note(threads)
        + " The floor leaves out the elementwise work of the backward pass (f'(z) and its "
        "product with the error), the biases, the loss and the probe pass, so it is a lower "
        "bound: an engine at 1.0 would do nothing else."))
    return table
