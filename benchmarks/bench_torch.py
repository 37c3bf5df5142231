"""Benchmark 1: our instrumented trainer against PyTorch CPU (torch.nn + autograd + optim.SGD).

Same architecture, same initial weights (copied from our network), same data, same dtype, same
number of threads (threadpoolctl on numpy's BLAS, ``torch.set_num_threads`` on torch), same
number of epochs. Time per epoch, medians of interleaved repeats.

The torch side does what a fair peer does each epoch: forward, loss, backward, step, and the
loss read out as a Python float (``loss.item()``; with mini-batches the mean of the batch
losses), plus the final network's loss after the last epoch (our history's last row). Ours
additionally computes the training accuracy every epoch, and with diagnostics on the per-layer
statistics of docs/run-record.md (torch computes none of them): both are shown, ours with
diagnostics on (the goal) and off. With mini-batches our trainer measures its history row on a
probe pass over the whole training set at the start of each epoch (forward only with diagnostics
off; forward and backward with diagnostics on, for the per-layer gradients).

torch is an optional extra (``pip install -e '.[torch]'``); without it this benchmark is skipped.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import (
    MISS,
    TORCH_MISSING,
    Row,
    Sample,
    Table,
    Timer,
    at_most,
    clock_note,
    details,
    fmt_ratio,
    fmt_time,
    has_module,
    interleaved,
    medians,
    primary,
    profile_top,
)
from benchmarks.workloads import WORKLOADS, Workload, run_ours

GOALS = {"notebook": 0.5, "deep": 1.0, "wide mini-batch": 1.0}
DTYPES = (np.float64, np.float32)
CHECK_EPOCHS = 21  # loss rows compared between ours and torch (rows 0..20)


class TorchPeer:
    """A torch.nn copy of one of our networks, with its data, loss and SGD optimizer."""

    def __init__(self, wl: Workload, net, ds, dtype: type) -> None:
        import torch

        self.torch = torch
        tdtype = torch.float64 if dtype == np.float64 else torch.float32
        acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}
        layers: list = []
        for l, (W, b) in enumerate(zip(net.weights, net.biases, strict=True)):
            linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=tdtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.array(W)))
                linear.bias.copy_(torch.from_numpy(np.array(b[:, 0])))
            layers.append(linear)
            if l < net.n_layers - 1:
                layers.append(acts[wl.activation]())
        self.model = torch.nn.Sequential(*layers)
        # torch's convention is samples x features: the transposed copy is made here, untimed.
        self.X = torch.from_numpy(np.ascontiguousarray(ds.X_train.T)).to(tdtype)
        Y = np.ascontiguousarray(ds.Y_train.T)
        if wl.output == "softmax_ce":
            self.T = torch.from_numpy(Y.argmax(axis=1))
            self.loss_fn = torch.nn.CrossEntropyLoss()
        else:
            self.T = torch.from_numpy(Y).to(tdtype)
            self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=wl.lr)
        self.batch_size = wl.batch_size
        self.generator = torch.Generator().manual_seed(0)

    def train(self, epochs: int) -> list[float]:
        """``epochs`` epochs, then the final loss; the per-epoch losses (epochs + 1 values)."""
        torch, model, loss_fn, opt = self.torch, self.model, self.loss_fn, self.opt
        X, T = self.X, self.T
        n = X.shape[0]
        losses = []
        for _ in range(epochs):
            if self.batch_size is None:
                opt.zero_grad()
                loss = loss_fn(model(X), T)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            else:
                order = torch.randperm(n, generator=self.generator)
                total, batches = 0.0, 0
                for s in range(0, n, self.batch_size):
                    idx = order[s : s + self.batch_size]
                    opt.zero_grad()
                    loss = loss_fn(model(X[idx]), T[idx])
                    loss.backward()
                    opt.step()
                    total += loss.item()
                    batches += 1
                losses.append(total / batches)
        with torch.no_grad():
            losses.append(loss_fn(model(X), T).item())
        return losses


def explain(table: Table, wl: Workload, dtype: type, ds, epochs: int, row: Row,
            quick: bool) -> None:
    """Notes on a missed goal: the known cause, and a profile of our run."""
    name = np.dtype(dtype).name
    on, off = row.values["ours_on_s"], row.values["ours_off_s"]
    if wl.batch_size is not None:
        probe = (
            f"**{wl.key}: why the goal is missed.** With mini-batches ours measures, at the "
            "start of every epoch, the loss and accuracy on the whole training set (a forward "
            "pass torch's loop does not make: it reports its batches' losses) and, with "
            "diagnostics, a forward and backward pass over the probe batch (at most 512 "
            "training samples)."
        )
        if probe not in table.notes:
            table.notes.append(probe)
        table.notes.append(
            f"{wl.key}, {name}: diagnostics on add {fmt_time(on - off)} an epoch "
            f"({fmt_ratio(100 * (on - off) / off)}% of an epoch with them off); off/torch = "
            f"{fmt_ratio(row.values['off_over_torch'])}.")
    else:
        table.notes.append(
            f"**{wl.key}, {name}: goal missed** (ours with diagnostics off / torch = "
            f"{fmt_ratio(row.values['off_over_torch'])}); profile of our run below.")
    floor_note = ("Benchmark 7 (`floor`) times the operations no numpy engine can avoid on "
                  "these shapes, with numpy and with torch: the best ratio to torch a numpy "
                  "engine could reach, and how close ours is to it.")
    if floor_note not in table.notes:
        table.notes.append(floor_note)
    if not quick:
        table.notes.append(details(
            f"cProfile of our run, {wl.key}, {name}, diagnostics on",
            profile_top(lambda: run_ours(wl, ds, dtype, diagnostics=True, epochs=epochs)),
        ))


def run(quick: bool = False, threads: int = 1, workloads: tuple[Workload, ...] = WORKLOADS,
        repeats: int | None = None) -> Table:
    table = Table(
        key="torch",
        title="1. Trainer against PyTorch CPU (time per epoch)",
        what=(
            "Our trainer (numpy, `train()` with per-layer diagnostics on, and off) against "
            "`torch.nn` + autograd + `torch.optim.SGD` (a plain loop reading `loss.item()` every "
            f"epoch), same architecture, initial weights, data and dtype, {threads} thread(s) on "
            "both. Ratio = ours (diagnostics on) / torch; `off/torch` is ours with diagnostics "
            "off. `loss curves` = largest relative difference between our per-epoch training "
            "loss and torch's over the first epochs (full batch only: the same updates, so it "
            "checks that both compute the same thing; a mismatch marks the row MISS)."
        ),
        ratio_label="ours/torch",
    )
    if not has_module("torch"):
        table.skipped = TORCH_MISSING
        return table
    import torch

    torch.set_num_threads(threads)
    repeats = repeats if repeats is not None else (1 if quick else 4)
    for wl in workloads:
        epochs = wl.n_epochs(quick)
        for dtype in DTYPES:
            ds = wl.data(dtype, quick)
            last: dict[str, list[float]] = {}

            def ours(diagnostics: bool, wl=wl, ds=ds, dtype=dtype, epochs=epochs,
                     last=last) -> Sample:
                sample, result = run_ours(wl, ds, dtype, diagnostics=diagnostics, epochs=epochs)
                last["ours"] = result.history.scalars["train/loss"][: result.history.n_rows]
                return sample / epochs

            def peer(wl=wl, ds=ds, dtype=dtype, epochs=epochs, last=last) -> Sample:
                p = TorchPeer(wl, wl.net(ds, dtype, seed=1), ds, dtype)
                with Timer() as timer:
                    last["torch"] = p.train(epochs)
                return timer.sample / epochs

            times = interleaved(
                {"on": lambda: ours(True), "off": lambda: ours(False), "torch": peer},
                repeats, warmup=1,
            )
            on, off, tt = (medians(times[k]) for k in ("on", "off", "torch"))
            t_on, t_off, t_torch = (primary(x, threads) for x in (on, off, tt))
            ok, agree = True, "n/a (shuffles differ)"
            if wl.batch_size is None:
                # Same updates on both sides, but training at lr 0.5 is chaotic later on
                # (rounding differences grow): compare the first epochs only.
                a = np.asarray(last["ours"], float)[:CHECK_EPOCHS]
                b = np.asarray(last["torch"], float)[:CHECK_EPOCHS]
                rel = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))
                agree = f"{rel:.1e}"
                ok = a.shape == b.shape and rel < (1e-9 if dtype == np.float64 else 1e-3)
            dname = np.dtype(dtype).name
            table.add(Row(
                case=f"{wl.key}, {dname}",
                ratio=t_on / t_torch,
                goal=at_most(GOALS[wl.key]),
                cells={
                    "workload": wl.label if dtype == np.float64 else "(same, float32)",
                    "epochs": str(epochs),
                    "ours, diag on": fmt_time(t_on),
                    "ours, diag off": fmt_time(t_off),
                    "torch": fmt_time(t_torch),
                    "off/torch": fmt_ratio(t_off / t_torch),
                    "wall: on/torch, off/torch": (f"{fmt_ratio(on.wall / tt.wall)}, "
                                                  f"{fmt_ratio(off.wall / tt.wall)}"),
                    f"loss curves ({CHECK_EPOCHS} epochs)": agree,
                },
                values={"ours_on_s": t_on, "ours_off_s": t_off, "torch_s": t_torch,
                        "off_over_torch": t_off / t_torch, "wall_ratio": on.wall / tt.wall},
                ok=ok,
            ))
            if table.rows[-1].status == MISS:
                explain(table, wl, dtype, ds, epochs, table.rows[-1], quick)
    mkl = "MKL" if torch.backends.mkl.is_available() else "no MKL"
    table.notes.insert(0, (
        f"torch {torch.__version__} ({mkl}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, torch.get_num_threads() = "
        f"{torch.get_num_threads()}); numpy's BLAS: see the machine table. {repeats} "
        "interleaved repeats after one warm-up round, medians. " + clock_note(threads)
    ))
    return table
