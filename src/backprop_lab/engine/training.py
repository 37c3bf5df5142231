"""The training loop.

``train`` runs ``epochs`` epochs and records ``epochs + 1`` history rows: row e is measured at the
start of epoch e, so row 0 describes the network at initialization and the last row the trained
network. Loss and accuracy are measured on the whole training set (and the validation set); the
per-layer diagnostics on the probe batch. With full-batch gradient descent the probe batch is the
training set and the probe pass is the training pass, as in the reference notebook (whose
"Epoch 100" line is row 99 here). With mini-batches (``batch_size``) the probe batch is a fixed
subset of at most ``probe_size`` training samples; each epoch first measures, then shuffles the
training set with ``rng`` and takes one optimizer step per batch.

Training stops early, with status ``diverged`` and the epoch, when the training loss is not finite,
and with status ``stopped`` when a callback raises :class:`StopTraining` (e.g. a hyper-parameter
search pruning the run); the row the callback saw is kept.
Exceptions (KeyboardInterrupt included) propagate after the history has been completed up to the
last measured row, so a caller can still save what was recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backprop_lab.engine.datasets import Dataset
from backprop_lab.engine.diagnostics import DiagnosticsRecorder, Histogram
from backprop_lab.engine.history import CLIP_SCALARS, History
from backprop_lab.engine.limits import budget, gib
from backprop_lab.engine.network import MLP
from backprop_lab.engine.optimizers import Optimizer


class StopTraining(Exception):
    """Raised by a callback's ``on_epoch_end`` to end training after the current row."""


@dataclass
class TrainResult:
    """What a training run returns."""

    history: History
    status: str  # "finished" | "diverged" | "stopped"
    diverged_epoch: int | None
    epochs_run: int  # epochs of updates completed
    seconds: float
    histograms: list[Histogram] = field(default_factory=list)
    stop_reason: str | None = None  # the StopTraining message of a stopped run

    @property
    def final(self) -> dict[str, float]:
        """Every metric of the last recorded row."""
        return self.history.final()

    def __repr__(self) -> str:
        loss = self.final.get("train/loss", float("nan"))
        where = f" at epoch {self.diverged_epoch}" if self.diverged_epoch is not None else ""
        return f"TrainResult({self.status}{where}, {self.epochs_run} epochs, loss {loss:.4g})"


def history_bytes(net: MLP, data: Dataset, epochs: int, diagnostics: bool = True) -> int:
    """Bytes of the preallocated History of a run (epochs + 1 rows of float64 per metric)."""
    metrics = (4 if data.n_val else 2) + (9 * net.n_layers if diagnostics else 0)
    return (int(epochs) + 1) * (metrics + 1) * 8  # + 1: the tracker's time stamp per row


def check_arguments(net: MLP, data: Dataset, epochs: int, batch_size: int | None,
                    histogram_every: int, *, diagnostics: bool = True) -> None:
    """The checks ``train`` makes before it starts; a ValueError names the bad argument.

    The History is preallocated (a row per epoch), so ``epochs`` is also bounded by memory:
    the history may take at most a quarter of the machine's physical memory.
    """
    every = histogram_every
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0; got {epochs!r}")
    limit = budget()
    needed = history_bytes(net, data, epochs, diagnostics)
    if needed > limit:
        per_epoch = history_bytes(net, data, 0, diagnostics)
        raise ValueError(
            f"too many epochs: the history of {epochs} epochs needs {gib(needed)} "
            f"({per_epoch} bytes an epoch); at most {limit // per_epoch - 1} epochs fit in a "
            f"quarter of this machine's memory ({gib(limit * 4)})")
    # Forward/backward workspaces: activations, pre-activations, errors of every unit on every
    # training (and validation) sample.
    needed = 4 * net.dtype.itemsize * sum(net.sizes) * (data.n_train + data.n_val)
    if needed > limit:
        raise ValueError(
            f"the network's workspaces on {data.n_train + data.n_val} samples (n_samples) x "
            f"{sum(net.sizes)} units (layer widths) need {gib(needed)}, more than a quarter of "
            f"this machine's memory ({gib(limit * 4)})")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(
            f"batch_size must be a positive integer or None (full batch); got {batch_size!r}"
        )
    if every < 0:
        raise ValueError(f"histogram_every must be >= 0; got {every!r}")
    if data.n_features != net.sizes[0]:
        raise ValueError(
            f"data set {data.name!r} has {data.n_features} input features but {net!r} takes "
            f"{net.sizes[0]}"
        )
    if data.n_outputs != net.sizes[-1]:
        raise ValueError(
            f"data set {data.name!r} has {data.n_outputs} target rows ({data.n_classes} classes) "
            f"but {net!r} has {net.sizes[-1]} outputs"
        )
    net.head.check_targets(data.Y_train)


def _as(net: MLP, A: np.ndarray) -> np.ndarray:
    return A if A.dtype == net.dtype else np.ascontiguousarray(A, dtype=net.dtype)


def train(
    net: MLP,
    data: Dataset,
    optimizer: Optimizer,
    *,
    epochs: int,
    batch_size: int | None = None,
    callbacks: Sequence[Any] = (),
    diagnostics: bool = True,
    histogram_every: int = 0,
    rng: np.random.Generator | None = None,
    probe_size: int = 512,
) -> TrainResult:
    """Train ``net`` on ``data`` with ``optimizer``.

    Args:
        epochs: number of epochs of updates (the history gets epochs + 1 rows).
        batch_size: mini-batch size; None (or >= the training set) means full batch.
        callbacks: objects with any of ``on_train_start(net, data, history)``,
            ``on_epoch_end(epoch, history)`` (called as soon as row ``epoch`` is complete: after
            the epoch's updates, or after its measurement for the last row) and
            ``on_train_end(result)``. ``on_epoch_end`` may raise :class:`StopTraining` to end
            training there (status ``stopped``).
        diagnostics: record the per-layer diagnostics (see diagnostics.py).
        histogram_every: with diagnostics, histograms every this many epochs and at the end
            (0: none).
        rng: shuffles mini-batches (default: a Generator seeded with 0, so runs are repeatable).
        probe_size: with mini-batches, the diagnostics' probe batch is at most this many evenly
            spaced training samples, fixed for the run (full batch: the whole training set).
            Loss and accuracy are always measured on the whole training set.
    """
    check_arguments(net, data, epochs, batch_size, histogram_every, diagnostics=diagnostics)
    if probe_size < 1:
        raise ValueError(f"probe_size must be a positive integer; got {probe_size!r}")
    X, Y = _as(net, data.X_train), _as(net, data.Y_train)
    Xv, Yv = _as(net, data.X_val), _as(net, data.Y_val)
    n = X.shape[1]
    full_batch = batch_size is None or batch_size >= n
    has_val = Xv.shape[1] > 0
    rng = np.random.default_rng(0) if rng is None else rng

    # The probe batch of the diagnostics: the training set itself for full-batch training (the
    # probe pass is the training pass); for mini-batches, at most probe_size evenly spaced
    # training samples, fixed for the whole run.
    if full_batch or n <= probe_size:
        Xp, Yp = X, Y
    else:
        keep = np.unique(np.linspace(0, n - 1, probe_size).round().astype(np.intp))
        Xp, Yp = np.ascontiguousarray(X[:, keep]), np.ascontiguousarray(Y[:, keep])
    separate_probe = Xp is not X

    clipping = optimizer.clip_norm is not None
    history = History(epochs + 1, net.n_layers, has_val, diagnostics,
                      CLIP_SCALARS if clipping else ())
    optimizer.take_clip_stats()  # count this run's steps only
    # The pass over the training set (loss, accuracy: the probe pass unless the probe is a
    # subset), the probe pass and the validation pass.
    train_ws = net.new_workspace(n)
    ws = net.new_workspace(Xp.shape[1]) if separate_probe else train_ws
    recorder = DiagnosticsRecorder(net, ws) if diagnostics else None
    val_ws = net.new_workspace(Xv.shape[1]) if has_val else None
    histograms: list[Histogram] = []
    loss_row, acc_row = history.scalars["train/loss"], history.scalars["train/accuracy"]
    epoch_end = [cb.on_epoch_end for cb in callbacks if hasattr(cb, "on_epoch_end")]

    for cb in callbacks:
        if hasattr(cb, "on_train_start"):
            cb.on_train_start(net, data, history)

    status, diverged_epoch, epochs_run, measured = "finished", None, 0, 0
    stop_reason = None
    start = time.perf_counter()
    # A diverging run overflows on purpose: it is detected and reported, not warned about.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            # The pre-activations are reduced in the probe pass's forward.
            train_hook = (recorder.on_preact if recorder is not None and not separate_probe
                          else None)
            for e in range(epochs + 1):
                # Batch norm's running statistics follow the passes an update is made from.
                net.update_running_stats = full_batch and e < epochs
                net.forward(X, train_ws, train_hook)
                net.update_running_stats = False
                loss = net.loss(train_ws, Y)
                loss_row[e] = loss
                acc_row[e] = net.accuracy(train_ws, Y)
                if has_val:
                    net.forward_eval(Xv, val_ws)
                    history.scalars["val/loss"][e] = net.loss(val_ws, Yv)
                    history.scalars["val/accuracy"][e] = net.accuracy(val_ws, Yv)
                last = e == epochs or not math.isfinite(loss)
                if recorder is not None:
                    if separate_probe:
                        net.forward(Xp, ws, recorder.on_preact)
                    want = bool(histogram_every) and (e % histogram_every == 0 or last)
                    recorder.collect_histograms = want
                    net.backward(Yp, ws, recorder.on_layer)
                    recorder.measure(e, history)
                    if want:
                        histograms.extend(recorder.histograms(e))
                elif full_batch and not last:
                    net.backward(Y, ws)
                measured = e + 1
                if not last:
                    if full_batch:
                        optimizer.step(net)
                    else:
                        net.update_running_stats = True
                        order = rng.permutation(n)
                        for s in range(0, n, batch_size):
                            idx = order[s : s + batch_size]
                            Xb, Yb = X.take(idx, axis=1), Y.take(idx, axis=1)
                            batch_ws = net.workspace(idx.size)
                            net.forward(Xb, batch_ws)
                            net.backward(Yb, batch_ws)
                            optimizer.step(net)
                        net.update_running_stats = False
                    epochs_run = e + 1
                    if clipping:
                        norm, fraction = optimizer.take_clip_stats()
                        history.scalars["clip/grad_norm"][e] = norm
                        history.scalars["clip/fraction"][e] = fraction
                    if recorder is not None:
                        recorder.record_update(e, history)
                history.n_rows = e + 1
                try:
                    for call in epoch_end:
                        call(e, history)
                except StopTraining as stop:
                    status, stop_reason = "stopped", str(stop)
                    break
                if last:
                    if not math.isfinite(loss):
                        status, diverged_epoch = "diverged", e
                    break
        finally:
            # On any exception (KeyboardInterrupt included) the rows measured so far count;
            # a row whose update did not complete keeps a NaN update ratio.
            history.n_rows = measured

    result = TrainResult(
        history=history,
        status=status,
        diverged_epoch=diverged_epoch,
        epochs_run=epochs_run,
        seconds=time.perf_counter() - start,
        histograms=histograms,
        stop_reason=stop_reason,
    )
    for cb in callbacks:
        if hasattr(cb, "on_train_end"):
            cb.on_train_end(result)
    return result
