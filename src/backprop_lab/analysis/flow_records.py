"""One run's data for the gradient-flow page (analysis/gradient_flow.py), with numpy only.

A *record* is a JSON-able dict that holds what the page draws of one run:

- ``epochs`` (E,): the epochs kept, all of them up to :data:`MAX_EPOCHS`, else log-spaced
  (:func:`sample_epochs`: dense at the start, where gradients change fastest, and always the
  first and the last);
- ``values[metric]`` (E, L): the per-layer quantities of :data:`PAGE_METRICS` at those epochs,
  as log10 rounded to :data:`LOG_DECIMALS` decimals (``null`` where the value is 0, negative
  or not finite) or, for the shares of :data:`SHARE_METRICS`, the value itself;
- ``ends``: every per-layer metric at initialization and at the last epoch, unrounded (the
  computed conclusion reads these);
- ``theory``: mean-field theory at initialization (engine/theory.py) per layer (L,):
  ``delta_std`` anchored at the measured top hidden layer and multiplied by the predicted
  per-layer factors going down; ``preact_var`` the variance map q^l;
- ``hist``: the run's histograms (kinds weights, grads, activations, deltas), per kind the
  epochs, every layer's range (lo, hi) and its 64 counts quantized to 0..255 of the
  histogram's largest bin, base64 (epoch, layer, bin) order.

Records are made from a run in memory (:func:`record_from_history`, at the end of a job:
nothing is read back) or from the analysis tables (analysis/gradient_flow.py). Importing this
module loads numpy and the engine only: a sweep's job builds its record without pandas.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from backprop_lab.engine.history import LAYER_METRICS, SCALARS

#: The per-layer quantities the page offers, in its menu's order.
PAGE_METRICS = ("delta_std", "grad_norm", "grad_weight_ratio", "update_ratio", "act_std",
                "saturation", "dead_fraction", "preact_var")
#: Shares in [0, 1], drawn on a linear axis (their log10 of 0 would be -inf).
SHARE_METRICS = ("saturation", "dead_fraction")
#: At most this many epochs of a run are kept in its record (log-spaced beyond).
MAX_EPOCHS = 200
#: At most this many histogram epochs of a run are kept (evenly spread beyond).
MAX_HISTOGRAM_EPOCHS = 40
LOG_DECIMALS = 3  # 0.001 decade: values to 0.23%
SHARE_DECIMALS = 4
HISTOGRAM_KINDS = ("weights", "grads", "activations", "deltas")


def make_label(activation: str | None, init: str | None) -> str:
    """How a configuration is named in legends: ``"relu (he)"``."""
    if not init:
        return str(activation)
    return f"{activation} ({init})"


def sample_epochs(n_rows: int, max_points: int = MAX_EPOCHS) -> np.ndarray:
    """Row numbers to keep of ``n_rows``: all when they fit, else about ``max_points``
    log-spaced ones, 0 and ``n_rows - 1`` included (every epoch at the start, where spacing
    in log(1 + epoch) is finer than one epoch)."""
    if n_rows <= max_points:
        return np.arange(n_rows)
    count = max_points
    while True:
        picked = np.unique(np.round(np.geomspace(1, n_rows, count)).astype(int) - 1)
        if picked.size >= max_points or count > 20 * max_points:
            return picked
        count += max_points - picked.size


def thin(epochs: Sequence[int], max_points: int) -> np.ndarray:
    """Positions of at most ``max_points`` of ``epochs`` (already log-spaced), spread evenly
    over the positions, first and last kept."""
    n = len(epochs)
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max(2, max_points))).astype(int))


def encode(metric: str, values: np.ndarray) -> list:
    """``values`` (E, L) as nested lists: log10 rounded, or the share rounded; None for a
    value that has no finite log (0, negative, NaN, inf)."""
    values = np.asarray(values, dtype=float)
    if metric in SHARE_METRICS:
        out = np.round(values, SHARE_DECIMALS)
        good = np.isfinite(out)
    else:
        good = np.isfinite(values) & (values > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.round(np.log10(np.where(good, values, 1.0)), LOG_DECIMALS)
    return [[float(v) if g else None for v, g in zip(row, ok)]
            for row, ok in zip(out.tolist(), good.tolist())]


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def theory_lines(activation: str, init: str, sizes: Sequence[int], input_var: float | None,
                 delta_std_init: np.ndarray) -> dict[str, list]:
    """Mean-field predictions at initialization per layer (L,): ``delta_std`` anchored at the
    measured layer L-1 (``delta_std_init`` (L,)), ``preact_var`` = q^l. Empty when theory does
    not know the network (an activation or init it has no entry for)."""
    from backprop_lab.engine.theory import anchored, mean_field

    q0 = 1.0 if input_var is None or not math.isfinite(input_var) else float(input_var)
    try:
        mf = mean_field(activation, init, [int(s) for s in sizes], input_var=q0)
    except (ValueError, KeyError):
        return {}
    n_layers = mf.n_layers
    layers = np.arange(1, n_layers + 1)
    top = n_layers - 1
    anchor = float(delta_std_init[top - 1]) if top >= 1 else float("nan")
    delta = anchored(anchor, np.asarray(mf.std_factors[: top - 1]), layers)
    return {"delta_std": [_finite(v) for v in delta],
            "preact_var": [_finite(v) for v in mf.q]}


def pack_histograms(histograms: Iterable, max_epochs: int = MAX_HISTOGRAM_EPOCHS) -> dict:
    """Histograms (objects or rows with epoch, layer, kind, counts (64,), edges (65,)) as the
    record's ``hist``: {kind: {"epochs": [...], "lo": [[...]], "hi": [[...]], "counts": b64}}.
    Counts are scaled to 0..255 of each histogram's largest bin (the page shows shares)."""
    by_kind: dict[str, dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]] = {}
    for h in histograms:
        by_kind.setdefault(str(h.kind), {})[(int(h.epoch), int(h.layer))] = (
            np.asarray(h.counts, dtype=float), np.asarray(h.edges, dtype=float))
    out = {}
    for kind in HISTOGRAM_KINDS:
        found = by_kind.get(kind)
        if not found:
            continue
        epochs = sorted({e for e, _ in found})
        epochs = [epochs[i] for i in thin(epochs, max_epochs)]
        n_layers = max(l for _, l in found)
        bins = len(next(iter(found.values()))[0])
        counts = np.zeros((len(epochs), n_layers, bins), dtype=np.uint8)
        lo = [[None] * n_layers for _ in epochs]
        hi = [[None] * n_layers for _ in epochs]
        for i, epoch in enumerate(epochs):
            for l in range(1, n_layers + 1):
                got = found.get((epoch, l))
                if got is None:
                    continue
                c, edges = got
                top = c.max() if c.size else 0.0
                if top > 0:
                    counts[i, l - 1] = np.round(255 * c / top).astype(np.uint8)
                lo[i][l - 1], hi[i][l - 1] = _finite(edges[0]), _finite(edges[-1])
        out[kind] = {"epochs": epochs, "bins": bins, "lo": lo, "hi": hi,
                     "counts": base64.b64encode(counts.tobytes()).decode("ascii")}
    return out


def make_record(meta: dict, epochs: np.ndarray, layers: dict[str, np.ndarray],
                histograms: Iterable = ()) -> dict:
    """A record from one run's per-layer arrays: ``layers[metric]`` (rows, L) over the
    epochs ``epochs`` (rows,) (every epoch the run has, in order), and ``meta``: its name and
    config (id, name, activation, init, depth, n_layers, width, sizes (list of widths), seed,
    dataset, input_var, outcome, final (the final scalar metrics), ...)."""
    epochs = np.asarray(epochs, dtype=int)
    keep = sample_epochs(len(epochs))
    values = {m: encode(m, layers[m][keep]) for m in PAGE_METRICS if m in layers}
    ends = {m: [[_finite(v) for v in layers[m][row]] for row in (0, len(epochs) - 1)]
            for m in LAYER_METRICS if m in layers}
    theory = {}
    sizes = meta.get("sizes")
    if sizes and "delta_std" in layers and len(epochs) and epochs[0] == 0:
        theory = theory_lines(meta["activation"], meta["init"], sizes, meta.get("input_var"),
                              np.asarray(layers["delta_std"][0], dtype=float))
    return {**meta, "epochs": epochs[keep].tolist(), "end_epochs": [int(epochs[0]),
                                                                     int(epochs[-1])],
            "values": values, "ends": ends, "theory": theory,
            "hist": pack_histograms(histograms)}


def record_from_history(history, histograms, meta: dict) -> dict | None:
    """The record of a run in memory (engine History and Histogram list); None without
    per-layer diagnostics."""
    if history is None or not history.n_rows or not history.layers:
        return None
    rows = history.n_rows
    final = {name: _finite(v[rows - 1]) for name, v in history.scalars.items()
             if name in SCALARS}
    layers = {m: history.layers[m][:rows] for m in history.layers}
    return make_record({**meta, "final": final}, np.arange(rows), layers, histograms or ())


def save_record(record: dict, path: Path) -> None:
    path.write_text(json.dumps(record, separators=(",", ":"), allow_nan=False))


def load_record(path: Path) -> dict:
    return json.loads(path.read_text())
