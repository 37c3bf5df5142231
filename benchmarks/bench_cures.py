"""Benchmark 7: what each cure costs an epoch, against the plain network and against PyTorch.

One workload (the deep one of workloads.py: 2 -> 10 x 64 tanh -> 1 on 2000 spiral samples,
full-batch GD at lr 0.1), trained with ``train()`` (per-layer diagnostics on, as every run of
the harness) plain and with each option of engine/blocks.py and optimizer.clip_norm; the
same network in torch (torch.nn.Linear + the same normalization module, the residual sum
written out, ``clip_grad_norm_``; forward, loss, backward, step and ``loss.item()`` an epoch).
Ratios: ours with the option / ours plain (the option's cost), and ours / torch with the same
layers. Time per epoch, medians of interleaved repeats. Correctness: our per-epoch training loss
against torch's over the first epochs (same initial weights, same updates).
"""

from __future__ import annotations

import numpy as np

from backprop_lab.engine.blocks import BATCH_MOMENTUM, NORM_EPS, make_network
from backprop_lab.engine.optimizers import make_optimizer
from backprop_lab.engine.training import train
from benchmarks.common import (
    Row,
    Sample,
    Table,
    Timer,
    fmt_ratio,
    fmt_time,
    has_module,
    interleaved,
    medians,
    primary,
)
from benchmarks.workloads import DEEP, Workload

#: (case, network options, clip_norm)
OPTIONS = (
    ("plain", {}, None),
    ("residual", {"residual": True, "residual_scale": 0.5}, None),
    ("layer norm", {"norm": "layer"}, None),
    ("batch norm", {"norm": "batch"}, None),
    ("clip_norm", {}, 1.0),
    ("both: residual + layer norm",
     {"residual": True, "residual_scale": 0.5, "norm": "layer"}, None),
)
CHECK_EPOCHS = 10


def build(wl: Workload, ds, options: dict):
    return make_network(wl.sizes(ds), wl.activation, wl.output, rng=np.random.default_rng(1),
                        **options)


def run_ours(wl: Workload, ds, options: dict, clip: float | None, epochs: int):
    net = build(wl, ds, options)
    opt = make_optimizer("gd", lr=wl.lr, clip_norm=clip)
    with Timer() as timer:
        result = train(net, ds, opt, epochs=epochs, rng=np.random.default_rng(0))
    return timer.sample, result.history.scalars["train/loss"][: result.history.n_rows]


class TorchBlocks:
    """The same network in torch: Linear layers, the normalization module before each hidden
    activation, the residual sum a + alpha f(...) on hidden layers 2..L-1, SGD, clipping."""

    def __init__(self, wl: Workload, net, ds, options: dict, clip: float | None) -> None:
        import torch

        self.torch = torch
        self.linears = []
        for W, b in zip(net.weights, net.biases, strict=True):
            linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.array(W)))
                linear.bias.copy_(torch.from_numpy(np.array(b[:, 0])))
            self.linears.append(linear)
        norm = options.get("norm", "none")
        widths = [W.shape[0] for W in net.weights[:-1]]
        self.norms = [
            torch.nn.LayerNorm(n, eps=NORM_EPS, dtype=torch.float64) if norm == "layer" else
            torch.nn.BatchNorm1d(n, eps=NORM_EPS, momentum=BATCH_MOMENTUM, dtype=torch.float64)
            for n in widths] if norm != "none" else []
        self.residual = [bool(r) for r in getattr(net, "is_residual", [False] * net.n_layers)]
        self.alpha = float(options.get("residual_scale", 1.0))
        params = [p for m in (*self.linears, *self.norms) for p in m.parameters()]
        self.params = params
        self.opt = torch.optim.SGD(params, lr=wl.lr)
        self.clip = clip
        self.X = torch.from_numpy(np.ascontiguousarray(ds.X_train.T))
        self.T = torch.from_numpy(np.ascontiguousarray(ds.Y_train.T))
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.act = torch.tanh

    def forward(self, X):
        a = X
        last = len(self.linears) - 1
        for l, linear in enumerate(self.linears):
            z = linear(a)
            if l == last:
                return z
            y = self.norms[l](z) if self.norms else z
            h = self.act(y)
            a = a + self.alpha * h if self.residual[l] else h
        return a

    def train(self, epochs: int) -> list[float]:
        losses = []
        for _ in range(epochs):
            self.opt.zero_grad()
            loss = self.loss_fn(self.forward(self.X), self.T)
            loss.backward()
            if self.clip is not None:
                self.torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.opt.step()
            losses.append(loss.item())
        return losses


def run(quick: bool = False, threads: int = 1, repeats: int | None = None) -> Table:
    wl = DEEP
    epochs = wl.n_epochs(quick)
    table = Table(
        key="cures",
        title="7. The cures: cost per epoch against the plain network and against PyTorch",
        what=(
            f"{wl.label}, {epochs} epochs of `train()` (diagnostics on) plain and with each "
            "option (engine/blocks.py: `model.residual`, `model.norm`; `optimizer.clip_norm`), "
            "and the same layers in torch (nn.LayerNorm / nn.BatchNorm1d in training mode, the "
            "residual sum, `clip_grad_norm_`, SGD). Ratio = ours with the option / ours plain; "
            "`ours/torch` compares the same layers. `loss curves` = largest relative difference "
            f"between our per-epoch training loss and torch's over the first {CHECK_EPOCHS} "
            "epochs (same weights and updates: a mismatch marks the row MISS)."
        ),
        ratio_label="option/plain",
    )
    torch_ok = has_module("torch")
    if torch_ok:
        import torch

        torch.set_num_threads(threads)
    repeats = repeats if repeats is not None else (1 if quick else 5)
    ds = wl.data(np.float64, quick)
    losses: dict[str, dict[str, list[float]]] = {case: {} for case, _, _ in OPTIONS}
    variants = {}
    for case, options, clip in OPTIONS:
        def ours(case=case, options=options, clip=clip) -> Sample:
            sample, loss = run_ours(wl, ds, options, clip, epochs)
            losses[case]["ours"] = list(loss)
            return sample / epochs

        variants[f"ours {case}"] = ours
        if torch_ok:
            def peer(case=case, options=options, clip=clip) -> Sample:
                p = TorchBlocks(wl, build(wl, ds, options), ds, options, clip)
                with Timer() as timer:
                    losses[case]["torch"] = p.train(epochs)
                return timer.sample / epochs

            variants[f"torch {case}"] = peer
    times = interleaved(variants, repeats, warmup=1)
    plain = primary(medians(times["ours plain"]), threads)
    for case, _, _ in OPTIONS:
        ours_t = primary(medians(times[f"ours {case}"]), threads)
        cells = {"ours": fmt_time(ours_t)}
        values = {"ours_s": ours_t, "plain_s": plain}
        ok = True
        if torch_ok:
            torch_t = primary(medians(times[f"torch {case}"]), threads)
            a = np.asarray(losses[case]["ours"], float)[:CHECK_EPOCHS]
            b = np.asarray(losses[case]["torch"], float)[:CHECK_EPOCHS]
            n = min(len(a), len(b))
            rel = float(np.max(np.abs(a[:n] - b[:n]) / np.maximum(np.abs(b[:n]), 1e-12)))
            ok = n > 0 and rel < 1e-9
            cells |= {"torch": fmt_time(torch_t), "ours/torch": fmt_ratio(ours_t / torch_t),
                      f"loss curves ({CHECK_EPOCHS} epochs)": f"{rel:.1e}"}
            values |= {"torch_s": torch_t, "ours_over_torch": ours_t / torch_t}
        table.add(Row(case=case, ratio=ours_t / plain, cells=cells, values=values, ok=ok))
    clock = ("CPU seconds of the benchmark's thread (one BLAS/torch thread: all the work runs "
             "in it, so waiting for a core held by other processes is left out)" if threads == 1
             else "wall-clock seconds")
    table.notes.append(
        f"{repeats} interleaved repeats after one warm-up round, medians; times are {clock}."
        + " The machine is shared with other engineers' jobs: ratios, not absolute times, are "
        "the figures to quote.")
    if not torch_ok:
        table.notes.append("torch is not installed: the `ours/torch` column is left out.")
    return table
