"""The per-epoch record of a training run.

Row e (e = 0..epochs) describes the network after e epochs of updates, measured at the start of
epoch e: row 0 is the network at initialization, the last row the trained network. Scalars are
(rows,) arrays, per-layer diagnostics (rows, L) arrays; their MLflow names are
``train/loss``, ``val/accuracy``, ``grad_norm/layer_03`` and so on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

SCALARS = ("train/loss", "train/accuracy", "val/loss", "val/accuracy")
#: Recorded when the optimizer clips gradients (optimizers.py), for the updates of epoch e in
#: row e (NaN in the last row, which no update follows): the largest pre-clip global L2 norm
#: of the epoch's steps, and the fraction of its steps that were clipped (0 or 1 full batch).
CLIP_SCALARS = ("clip/grad_norm", "clip/fraction")
LAYER_METRICS = (
    "grad_weight_ratio",
    "grad_norm",
    "weight_norm",
    "update_ratio",
    "delta_std",
    "act_mean",
    "act_std",
    "saturation",
    "dead_fraction",
    "preact_var",
)


#: Digits of the layer number in metric names: zero-padded, so that the MLflow UI, which sorts
#: names as text, lists layer_01 .. layer_10 in layer order (up to 99 layers).
LAYER_DIGITS = 2


def layer_metric_name(metric: str, layer: int) -> str:
    """MLflow name of a per-layer metric, e.g. ``grad_norm/layer_03``; ``layer`` counts from 1
    (the layer fed by the input). Readers parse the number back with ``int``."""
    return f"{metric}/layer_{layer:0{LAYER_DIGITS}d}"


#: Per-layer metrics that span decades (1e-9 next to 1) whose log10 MLflow also gets by
#: default, as ``<metric>_log10/layer_NN``, so the UI's default linear axis reads them
#: (``tracking.log10`` chooses others). Tracking only: history.csv and the History keep the
#: plain values. Each adds L values a row to what a run stores (README, "Tracking cost").
LOG10_METRICS = ("grad_weight_ratio", "delta_std", "grad_norm")
LOG10_SUFFIX = "_log10"


def log10_companions(names: Sequence[str], values: np.ndarray,
                     metrics: Sequence[str] = LOG10_METRICS) -> tuple[list[str], np.ndarray]:
    """The log10 companions of the rows of ``values`` (names[i]: row i) that are per-layer
    ``metrics``: (their names, log10 of their values; NaN where a value is not > 0)."""
    picked = [(i, f"{metric}{LOG10_SUFFIX}/{rest}") for i, name in enumerate(names)
              for metric, sep, rest in [name.partition("/")]
              if sep and metric in metrics and rest.startswith("layer_")]
    if not picked:
        return [], np.empty((0, values.shape[1]))
    rows = values[[i for i, _ in picked]]
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(rows > 0, np.log10(np.where(rows > 0, rows, 1.0)), np.nan)
    return [name for _, name in picked], logs


def is_log10_companion(name: str) -> bool:
    """Is ``name`` a tracking-only log10 companion (see ``log10_companions``)?"""
    return name.partition("/")[0].endswith(LOG10_SUFFIX)


class History:
    """Preallocated per-epoch arrays; ``n_rows`` of them are complete."""

    def __init__(self, rows: int, n_layers: int, has_val: bool, diagnostics: bool,
                 extra_scalars: Sequence[str] = ()) -> None:
        self.n_layers = n_layers
        self.n_rows = 0
        names = (*(SCALARS if has_val else SCALARS[:2]), *extra_scalars)
        self.scalars: dict[str, np.ndarray] = {name: np.full(rows, np.nan) for name in names}
        self.layers: dict[str, np.ndarray] = (
            {name: np.full((rows, n_layers), np.nan) for name in LAYER_METRICS}
            if diagnostics
            else {}
        )

    def metric_names(self) -> list[str]:
        return [name for name, _ in self.metric_items()]

    def metric_items(
        self, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[str, np.ndarray]]:
        """(MLflow name, values of rows start..stop) for every metric; stop defaults to n_rows."""
        stop = self.n_rows if stop is None else stop
        for name, values in self.scalars.items():
            yield name, values[start:stop]
        for metric, values in self.layers.items():
            for l in range(self.n_layers):
                yield layer_metric_name(metric, l + 1), values[start:stop, l]

    def row(self, epoch: int) -> dict[str, float]:
        """Every metric of one row, by MLflow name."""
        return {name: float(values[0]) for name, values in self.metric_items(epoch, epoch + 1)}

    def final(self) -> dict[str, float]:
        return self.row(self.n_rows - 1) if self.n_rows else {}

    def to_frame(self):  # -> pandas.DataFrame (imported lazily: the engine does not need pandas)
        """All complete rows as a DataFrame indexed by ``epoch``, one column per metric."""
        import pandas as pd

        frame = pd.DataFrame({name: values for name, values in self.metric_items()})
        frame.index.name = "epoch"
        return frame

    def __repr__(self) -> str:
        return f"History({self.n_rows} rows, {len(self.metric_names())} metrics)"
