"""The training workloads the engine benchmarks share, and one timed run of our trainer."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from backprop_lab.engine.datasets import Dataset, load_dataset
from backprop_lab.engine.network import MLP
from backprop_lab.engine.optimizers import make_optimizer
from backprop_lab.engine.training import TrainResult, train
from benchmarks.common import Sample, Timer


@dataclass(frozen=True)
class Workload:
    """A network, its data and its optimizer; ``epochs`` per timed measurement."""

    key: str
    label: str
    dataset: str
    n_per_class: int | None  # samples per class (None: all of a bundled set)
    hidden: tuple[int, ...]
    activation: str
    output: str
    lr: float
    batch_size: int | None  # None: full batch
    epochs: int
    quick_epochs: int
    quick_n_per_class: int | None
    noise: float | None = None

    def data(self, dtype: type = np.float64, quick: bool = False) -> Dataset:
        n = self.quick_n_per_class if quick else self.n_per_class
        return load_dataset(self.dataset, n_samples=n, noise=self.noise, val_fraction=0.0,
                            rng=np.random.default_rng(0), dtype=dtype)

    def sizes(self, ds: Dataset) -> list[int]:
        return [ds.n_features, *self.hidden, ds.n_outputs]

    def net(self, ds: Dataset, dtype: type = np.float64, seed: int = 1) -> MLP:
        return MLP(self.sizes(ds), self.activation, self.output,
                   rng=np.random.default_rng(seed), dtype=dtype)

    @property
    def optimizer(self) -> str:
        return "gd" if self.batch_size is None else "sgd"

    def n_epochs(self, quick: bool) -> int:
        return self.quick_epochs if quick else self.epochs


NOTEBOOK = Workload(
    key="notebook", label="2-16-8-1 tanh, sigmoid+BCE, 400 samples, full batch",
    dataset="spiral", n_per_class=200, noise=0.3, hidden=(16, 8), activation="tanh",
    output="sigmoid_bce", lr=0.5, batch_size=None, epochs=1000, quick_epochs=20,
    quick_n_per_class=20,
)
DEEP = Workload(
    key="deep", label="2 -> 10 x 64 tanh -> 1, 2000 samples, full batch",
    dataset="spiral", n_per_class=1000, noise=0.3, hidden=(64,) * 10, activation="tanh",
    output="sigmoid_bce", lr=0.1, batch_size=None, epochs=40, quick_epochs=3,
    quick_n_per_class=20,
)
WIDE_MINIBATCH = Workload(
    key="wide mini-batch", label="digits 64 -> 3 x 256 relu -> 10 softmax, batch 64 (1797 samples)",
    dataset="digits", n_per_class=None, hidden=(256,) * 3, activation="relu",
    output="softmax_ce", lr=0.05, batch_size=64, epochs=4, quick_epochs=1,
    quick_n_per_class=8,
)
WORKLOADS = (NOTEBOOK, DEEP, WIDE_MINIBATCH)


def run_ours(wl: Workload, ds: Dataset, dtype: type, *, diagnostics: bool, epochs: int,
             seed: int = 1, callbacks: tuple = ()) -> tuple[Sample, TrainResult]:
    """Train a fresh network; (time of ``train()`` only, its result)."""
    net = wl.net(ds, dtype, seed)
    opt = make_optimizer(wl.optimizer, lr=wl.lr)
    rng = np.random.default_rng(0)
    with Timer() as timer:
        result = train(net, ds, opt, epochs=epochs, batch_size=wl.batch_size,
                       diagnostics=diagnostics, rng=rng, callbacks=callbacks)
    return timer.sample, result


class EpochClock:
    """Training callback: the time per epoch of the steady-state epochs of a run.

    ``on_epoch_end`` runs as each history row is complete, every epoch. The time between the
    first and the last row completed inside the training loop, divided by the epochs between them,
    leaves out building the network, allocating and first touching the workspaces, and the
    final probe pass (no update follows it).
    """

    def __init__(self) -> None:
        self.blocks: list[tuple[int, float, float]] = []  # (rows complete, wall, cpu)

    def on_epoch_end(self, epoch: int, history) -> None:
        if not self.blocks or self.blocks[-1][0] != history.n_rows:
            self.blocks.append((history.n_rows, time.perf_counter(), time.thread_time()))

    def per_epoch(self) -> Sample | None:
        inside = self.blocks[:-1]  # the last block is completed after the training loop
        if len(inside) < 2:
            return None
        (n0, w0, c0), (n1, w1, c1) = inside[0], inside[-1]
        return Sample(w1 - w0, c1 - c0) / (n1 - n0)


def run_steady(wl: Workload, ds: Dataset, dtype: type, *, diagnostics: bool, epochs: int,
               seed: int = 1) -> Sample:
    """Time per steady-state epoch of a training run (see :class:`EpochClock`); runs too short
    for two blocks inside the loop (tiny --quick sizes) fall back to the whole run / epochs."""
    clock = EpochClock()
    whole, _ = run_ours(wl, ds, dtype, diagnostics=diagnostics, epochs=epochs, seed=seed,
                        callbacks=(clock,))
    return clock.per_epoch() or whole / epochs
