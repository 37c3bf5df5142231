"""The runs' per-layer histograms (``histograms.npz`` artifacts) as one table, and what can be
read from a histogram: its normalized density and its quantiles.

A run saves, every ``histogram_every`` epochs, 64-bin histograms of each layer's weights,
weight gradients (``grads``), activations and back-propagated errors delta (``deltas``), each
over that array's own range (engine/diagnostics.py).
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from mlflow.artifacts import download_artifacts

from backprop_lab.contract import HISTOGRAMS_FILE

from .histories import _quiet_downloads

COLUMNS = ("run_id", "epoch", "layer", "kind", "counts", "edges")


def _read_run(run_id: str, artifact_uri: str, uri: str, folder: str) -> pd.DataFrame | None:
    try:
        path = download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/{HISTOGRAMS_FILE}",
                                  dst_path=os.path.join(folder, run_id), tracking_uri=uri)
    except Exception:  # noqa: BLE001 - a missing artifact raises store-specific errors
        return None
    with np.load(path) as data:
        return pd.DataFrame({
            "run_id": run_id,
            "epoch": data["epoch"].astype(int),
            "layer": data["layer"].astype(int),
            "kind": data["kind"].astype(str),
            "counts": list(data["counts"]),
            "edges": list(data["edges"]),
        })


def load_histograms(uri: str, runs: pd.DataFrame, workers: int = 8) -> pd.DataFrame:
    """Every histogram of the runs in ``runs`` (a :func:`.loading.runs_table`), with the runs'
    ``label``, ``activation``, ``init``, ``dataset`` and ``seed`` columns: one row per (run,
    epoch, layer, kind), ``counts`` (64,) and ``edges`` (65,) arrays. Runs without the
    artifact (histogram_every=0) are left out."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)

    def one(run_id: str) -> pd.DataFrame | None:
        return _read_run(run_id, client.get_run(run_id).info.artifact_uri, uri, folder)

    with tempfile.TemporaryDirectory() as folder, _quiet_downloads():
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            parts = [p for p in pool.map(one, runs["run_id"]) if p is not None]
    if not parts:
        return pd.DataFrame(columns=[*COLUMNS, "label", "activation", "init", "dataset", "seed"])
    keep = [c for c in ("run_id", "label", "activation", "init", "dataset", "seed")
            if c in runs.columns]
    table = pd.concat(parts, ignore_index=True)
    return table.merge(runs[keep].astype({"label": object}), on="run_id", how="left")


def density(counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres (64,), normalized density (64,)) of a histogram: it integrates to 1."""
    counts = np.asarray(counts, dtype=float)
    widths = np.diff(edges)
    total = counts.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        values = counts / (total * widths) if total > 0 else np.zeros_like(counts)
    values[~np.isfinite(values)] = 0.0
    return 0.5 * (edges[:-1] + edges[1:]), values


def quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    """The q-quantile (0..1) of the binned values, interpolated linearly inside its bin (exact
    to a bin's width, 1/64 of the range)."""
    cdf = np.concatenate([[0.0], np.cumsum(counts, dtype=float)])
    if cdf[-1] <= 0:
        return float("nan")
    return float(np.interp(q * cdf[-1], cdf, edges))


def pooled(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One density from several histograms of the same quantity (e.g. one layer over seeds):
    each histogram's density on a common grid of 64 bins over their joint range, averaged."""
    low = min(float(e[0]) for e in rows["edges"])
    high = max(float(e[-1]) for e in rows["edges"])
    if not high > low:
        high = low + 1e-12
    grid = np.linspace(low, high, 65)
    centres = 0.5 * (grid[:-1] + grid[1:])
    total = np.zeros(64)
    for counts, edges in zip(rows["counts"], rows["edges"]):
        x, d = density(counts, edges)
        total += np.interp(centres, x, d, left=0.0, right=0.0)
    total /= len(rows)
    return centres, total
