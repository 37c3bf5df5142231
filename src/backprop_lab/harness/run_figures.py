"""A run's figures: rendered from the live objects, or again later from what the run saved.

``curves.png``: loss (train and validation, log scale) and accuracy (train and validation);
``decision_boundary.png`` (2-D data only): the data (train and validation marked apart) and the
learned decision boundary over it; ``gradients.png``: every layer's gradient norm over training
(log scale), the picture of vanishing or exploding gradients.

matplotlib's object API (``Figure`` on an Agg canvas) is used, not pyplot, so no GUI backend or
global state is involved when jobs run in worker processes. Rendering is kept cheap: fixed
margins and title positions (no layout engine, no search for room above the axes), no mathtext
(log-axis labels use Unicode superscripts), and RGB PNGs written from the canvas with light
compression.

Any past run's figures can be rendered from its outputs (config.yaml, history.csv, weights.npz):
:func:`render_run_figures` for a run folder, :func:`render_mlflow_run` for an MLflow run (the
PNGs are logged back to the run under ``figures/``), or the command

    python -m backprop_lab.harness.run_figures multirun/2026-12-03/07-10-00/0   # a job's folder
    python -m backprop_lab.harness.run_figures 3f2c...e9 [--tracking-uri URI]   # an MLflow run id
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from backprop_lab.contract import CONFIG_FILE, HISTORY_FILE, SUMMARY_FILE, WEIGHTS_FILE

CLASS_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LIGHT_COLORS = ("#f4b6b6", "#b4cdee", "#b9e3b9", "#ffd3ad", "#d7c6e8",
                "#d9c3be", "#f6c9e7", "#d4d4d4", "#e8e8a8", "#b3eef3")
GRID_POINTS = 150  # per axis
CHUNK = 2048  # grid points per forward pass: bounds the workspace memory of deep networks
DPI = 100
PNG_COMPRESSION = 3  # zlib level: quicker than the default 6, files barely larger
FIGURE_FILES = ("curves.png", "decision_boundary.png", "gradients.png")


def _figure(width: float, height: float, ncols: int):
    """A pyplot-free figure on an Agg canvas and its axes (one Axes when ncols == 1)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins: a layout engine (constrained/tight) measures every text box again.
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08 if ncols > 1 else 0.12, right=0.97, bottom=0.12, top=0.86,
                        wspace=0.25)
    return fig, fig.subplots(1, ncols)


def _title(ax, text: str, **kwargs) -> None:
    # An explicit y turns off matplotlib's automatic title placement, which measures the
    # bounding boxes of every tick label on each draw; nothing sits above these axes.
    ax.set_title(text, y=1.0, **kwargs)


def _save(fig, path: Path) -> None:
    """Draw ``fig`` and write it as an RGB PNG (the figures are opaque: no alpha channel)."""
    from PIL import Image

    canvas = fig.canvas
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    Image.fromarray(np.ascontiguousarray(rgb)).save(
        path, format="png", compress_level=PNG_COMPRESSION, dpi=(DPI, DPI))


_SUPERSCRIPT = str.maketrans("-\u22120123456789", "\u207b\u207b\u2070\u00b9\u00b2\u00b3\u2074"
                                                    "\u2075\u2076\u2077\u2078\u2079")
_MATHTEXT_LABEL = re.compile(r"\$\\mathdefault\{(.*)\}\$")


def _plain_log_label(label: str) -> str:
    """matplotlib's log-axis label ``$\\mathdefault{2\\times10^{-3}}$`` as plain ``2×10⁻³``."""
    match = _MATHTEXT_LABEL.fullmatch(label)
    if match is None or "\\" in match.group(1).replace("\\times", ""):
        return label
    body = match.group(1).replace("\\times", "\u00d7")
    return re.sub(r"\^\{([-\u2212]?\d+)\}", lambda m: m.group(1).translate(_SUPERSCRIPT), body)


def _log_y(ax) -> None:
    """Log-scale y axis with matplotlib's own ticks and labels, set as text instead of mathtext."""
    from matplotlib.ticker import LogFormatterSciNotation

    class PlainLogFormatter(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            return _plain_log_label(super().__call__(x, pos))

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PlainLogFormatter())
    ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def _labels(Y: np.ndarray) -> np.ndarray:
    """Class index per sample from targets (k, n): k == 1 is binary."""
    return (Y[0] > 0.5).astype(int) if Y.shape[0] == 1 else Y.argmax(axis=0)


def save_curves(history, path: Path, title: str = "") -> None:
    """Loss (log scale) and accuracy per epoch, train and validation, side by side."""
    fig, (ax_loss, ax_acc) = _figure(11, 4.2, 2)
    epochs = np.arange(history.n_rows)
    for split, style in (("train", "-"), ("val", "--")):
        loss = history.scalars.get(f"{split}/loss")
        acc = history.scalars.get(f"{split}/accuracy")
        if loss is None:
            continue
        loss = loss[: history.n_rows]
        positive = np.where(loss > 0, loss, np.nan)  # a log axis cannot show 0 or inf
        ax_loss.plot(epochs, positive, style, lw=2, label=split)
        ax_acc.plot(epochs, acc[: history.n_rows], style, lw=2, label=split)
    _log_y(ax_loss)
    ax_loss.set(xlabel="epoch", ylabel="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.05))
    _title(ax_loss, "Loss")
    _title(ax_acc, "Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def save_gradient_flow(history, path: Path, title: str = "") -> bool:
    """Per-layer gradient norms over training (log scale); False when there are no diagnostics."""
    norms = history.layers.get("grad_norm") if hasattr(history, "layers") else None
    if norms is None or history.n_rows == 0:
        return False
    fig, ax = _figure(6.5, 4.2, 1)
    epochs = np.arange(history.n_rows)
    n_layers = norms.shape[1]
    cmap = _colormap("viridis")
    for l in range(n_layers):
        values = norms[: history.n_rows, l]
        ax.plot(epochs, np.where(values > 0, values, np.nan), lw=1.5,
                color=cmap(l / max(1, n_layers - 1)), label=f"layer {l + 1}")
    heading = "Gradient norm per layer (1 = fed by the input)"
    _log_y(ax)
    ax.set(xlabel="epoch", ylabel="|dL/dW| (Frobenius)")
    _title(ax, f"{title}\n{heading}" if title else heading, fontsize=10)
    ax.grid(True, alpha=0.3)
    if n_layers <= 12:
        ax.legend(fontsize="small", ncols=2)
    else:  # too many lines for a legend: a colour scale of layer numbers
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from matplotlib.ticker import MaxNLocator

        fig.colorbar(ScalarMappable(Normalize(1, n_layers), cmap), ax=ax, label="layer",
                     ticks=MaxNLocator(integer=True))
    _save(fig, path)
    return True


def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def save_decision_boundary(net, dataset, path: Path, title: str = "") -> bool:
    """Two panels: the data, and the decision boundary with the data. 2-D data sets only."""
    if not dataset.is_2d:
        return False
    from matplotlib.colors import ListedColormap

    X = np.concatenate([dataset.X_train, dataset.X_val], axis=1)
    margin = 0.5
    (x0, x1), (y0, y1) = [(X[i].min() - margin, X[i].max() + margin) for i in (0, 1)]
    xx, yy = np.meshgrid(np.linspace(x0, x1, GRID_POINTS), np.linspace(y0, y1, GRID_POINTS))
    grid = np.vstack([xx.ravel(), yy.ravel()]).astype(net.dtype)
    proba = np.concatenate(
        [net.predict_proba(grid[:, s : s + CHUNK]) for s in range(0, grid.shape[1], CHUNK)], axis=1
    )
    n_classes = max(2, dataset.n_classes)
    fig, (ax_data, ax_boundary) = _figure(11, 5, 2)
    points = ListedColormap(CLASS_COLORS[:n_classes])
    with np.errstate(invalid="ignore"):
        if proba.shape[0] == 1:
            Z = proba[0].reshape(xx.shape)
            ax_boundary.contourf(xx, yy, Z, levels=[0, 0.5, 1],
                                 cmap=ListedColormap(LIGHT_COLORS[:2]), alpha=0.8)
            ax_boundary.contour(xx, yy, Z, levels=[0.5], colors="k", linewidths=2)
        else:
            Z = proba.argmax(axis=0).reshape(xx.shape)
            ax_boundary.contourf(xx, yy, Z, levels=np.arange(n_classes + 1) - 0.5,
                                 cmap=ListedColormap(LIGHT_COLORS[:n_classes]), alpha=0.8)
    for ax in (ax_data, ax_boundary):
        for X_part, Y_part, marker, label in (
            (dataset.X_train, dataset.Y_train, "o", "train"),
            (dataset.X_val, dataset.Y_val, "^", "validation"),
        ):
            if X_part.shape[1] == 0:
                continue
            ax.scatter(X_part[0], X_part[1], c=_labels(Y_part), cmap=points, vmin=0,
                       vmax=n_classes - 1, marker=marker, edgecolors="k", linewidths=0.5,
                       s=28, label=label)
        ax.set(xlabel="x\u2081", ylabel="x\u2082", xlim=(x0, x1), ylim=(y0, y1))
        ax.grid(True, alpha=0.3)
    _title(ax_data, f"Data: {dataset.name} ({dataset.n_train} train, {dataset.n_val} val)")
    ax_data.legend(loc="upper right", fontsize="small")
    _title(ax_boundary, f"Decision boundary: {net!r}")
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return True


def save_run_figures(net, dataset, history, folder: Path, title: str = "") -> list[Path]:
    """Every figure of a run into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "curves.png"]
    save_curves(history, written[0], title)
    if save_decision_boundary(net, dataset, folder / "decision_boundary.png", title):
        written.append(folder / "decision_boundary.png")
    if save_gradient_flow(history, folder / "gradients.png", title):
        written.append(folder / "gradients.png")
    return written


# -- rendering from a run's saved outputs ----------------------------------------------------------

RUN_FILES = (CONFIG_FILE, HISTORY_FILE, WEIGHTS_FILE)
FIGURES_DIR = "figures"  # in a run folder, and in an MLflow run's artifacts
_LAYER_COLUMN = re.compile(r"(.+)/layer_(\d+)")
_RUN_ID = re.compile(r"[0-9a-f]{32}")


class RunOutputsError(ValueError):
    """A run folder or MLflow run whose figures cannot be rendered; the message says why."""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_config(path: Path):
    """A job's saved ``config.yaml`` as the DictConfig ``build.build`` takes.

    The file holds plain values (enums as names); the schema's enum fields get their Enum
    values back, as when Hydra composed the job's config.
    """
    import dataclasses
    import typing
    from enum import Enum

    from omegaconf import OmegaConf

    from backprop_lab.harness.config import Config

    plain = OmegaConf.to_container(OmegaConf.load(path), resolve=True)

    def restore(node: dict, schema: type, prefix: str) -> None:
        for key, hint in typing.get_type_hints(schema).items():
            value = node.get(key)
            if isinstance(hint, type) and issubclass(hint, Enum) and isinstance(value, str):
                if value not in hint.__members__:
                    raise RunOutputsError(f"{path}: {prefix}{key}={value} is not one of "
                                          f"{', '.join(hint.__members__)}")
                node[key] = hint[value]
            elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
                restore(value, hint, f"{prefix}{key}.")

    if not isinstance(plain, dict):
        raise RunOutputsError(f"{path} does not hold a config mapping")
    restore(plain, Config, "")
    return OmegaConf.create(plain)


def load_history(path: Path, n_layers: int):
    """A saved ``history.csv`` (epoch, then one column per metric; empty = NaN) as a History."""
    import csv

    from backprop_lab.engine.history import History

    with Path(path).open(newline="") as f:
        reader = csv.reader(f)
        names = next(reader, ["epoch"])[1:]
        rows = [[float(v) if v else np.nan for v in row[1:]] for row in reader if row]
    table = np.array(rows, dtype=float).reshape(len(rows), len(names))
    column = {name: table[:, i] for i, name in enumerate(names)}
    layered: dict[str, dict[int, str]] = {}
    for name in names:
        match = _LAYER_COLUMN.fullmatch(name)
        if match is not None and 1 <= int(match[2]) <= n_layers:
            layered.setdefault(match[1], {})[int(match[2])] = name
    n_rows = len(rows)
    history = History(n_rows, n_layers, has_val="val/loss" in column, diagnostics=bool(layered))
    for name in list(history.scalars):
        if name in column:
            history.scalars[name][:] = column[name]
        else:
            del history.scalars[name]
    for metric, layers in layered.items():
        values = history.layers.setdefault(metric, np.full((n_rows, n_layers), np.nan))
        for layer, name in layers.items():
            values[:, layer - 1] = column[name]
    history.n_rows = n_rows
    return history


def load_weights(net, path: Path) -> None:
    """Copy the parameters saved in ``weights.npz`` into ``net`` (which must match their sizes)."""
    with np.load(path) as saved:
        sizes = [int(s) for s in saved["sizes"]]
        if sizes != net.sizes:
            raise RunOutputsError(f"{path} holds a {'-'.join(map(str, sizes))} network but the "
                                  f"run's config.yaml builds {net!r}")
        for l in range(net.n_layers):
            net.weights[l][...] = saved[f"W{l + 1}"]
            net.biases[l][...] = saved[f"b{l + 1}"].reshape(net.biases[l].shape)
        blocks = (("gain", "gains"), ("shift", "shifts"), ("running_mean", "running_mean"),
                  ("running_var", "running_var"))
        for key, attribute in blocks:
            for l, array in enumerate(getattr(net, attribute, [])):
                if f"{key}{l + 1}" in saved:
                    array[...] = saved[f"{key}{l + 1}"].reshape(array.shape)


def load_run(folder: Path):
    """(trained network, data set, History) of a run folder, as they were when training ended.

    The data set and network are rebuilt from config.yaml by ``build.build`` (same seed, same
    random streams, so the same data), then the network gets the saved parameters.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunOutputsError(f"no run folder {folder}")
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if missing:
        jobs = sorted(path.parent for path in folder.glob("*/config.yaml"))
        hint = f" (a sweep's folder? give one job's folder, e.g. {jobs[0]})" if jobs else ""
        raise RunOutputsError(f"run folder {folder} lacks {', '.join(missing)}{hint}")
    from backprop_lab.harness.build import build

    config = load_config(folder / CONFIG_FILE)
    try:
        built = build(config)
    except (ValueError, KeyError, AttributeError, TypeError) as exc:  # say which file
        raise RunOutputsError(f"{folder / 'config.yaml'}: {_first_line(exc)}") from None
    load_weights(built.net, folder / WEIGHTS_FILE)
    history = load_history(folder / "history.csv", built.net.n_layers)
    return built.net, built.dataset, history


def saved_run_name(folder: Path) -> str:
    """The run's name as its job recorded it (``summary.json``), or "" when unknown."""
    import json

    try:
        return str(json.loads((Path(folder) / SUMMARY_FILE).read_text())["run_name"] or "")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def render_run_figures(folder: Path, out: Path | None = None,
                       title: str | None = None) -> list[Path]:
    """Render a run's figures from its folder's saved outputs; returns the files written.

    ``out``: where the PNGs go (default ``<folder>/figures``, where the run puts them).
    ``title``: the figures' title; None uses the run's name from ``summary.json``, as the run did.
    """
    folder = Path(folder)
    net, dataset, history = load_run(folder)
    if title is None:
        title = saved_run_name(folder)
    return save_run_figures(net, dataset, history, Path(out) if out else folder / FIGURES_DIR,
                            title)


def render_mlflow_run(run_id: str, tracking_uri: str | None = None,
                      out: Path | None = None) -> tuple[list[str], str]:
    """Render an MLflow run's figures from its artifacts and log them to it under ``figures/``.

    ``tracking_uri``: None uses $MLFLOW_TRACKING_URI, else the repository's mlflow.db.
    ``out``: also keep the PNGs there. Returns (artifact paths logged, the run's artifact URI).
    """
    import tempfile

    from backprop_lab.tracking import resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # MlflowClient would create an empty store
        raise RunOutputsError(f"no MLflow store at {db} (tracking URI {uri})")
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # three small files
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise RunOutputsError(f"no MLflow run {run_id} in {uri}") from None
    try:
        stored = {artifact.path for artifact in client.list_artifacts(run_id)}
        missing = [name for name in RUN_FILES if name not in stored]
        if missing:
            raise RunOutputsError(f"MLflow run {run_id} has no {', '.join(missing)} artifact")
        with tempfile.TemporaryDirectory(prefix="run-figures-") as tmp:
            for name in RUN_FILES:
                client.download_artifacts(run_id, name, tmp)
            figures = Path(out) if out else Path(tmp) / FIGURES_DIR
            written = render_run_figures(Path(tmp), figures, title=run.info.run_name or "")
            for path in written:
                client.log_artifact(run_id, str(path), FIGURES_DIR)
    except (MlflowException, OSError) as exc:
        raise RunOutputsError(f"MLflow run {run_id}: {_first_line(exc)}") from None
    return [f"{FIGURES_DIR}/{path.name}" for path in written], run.info.artifact_uri


def main(argv: list[str] | None = None) -> int:
    """``python -m backprop_lab.harness.run_figures TARGET [--tracking-uri URI] [--out DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m backprop_lab.harness.run_figures",
        description="Render a past run's figures (curves, decision boundary, gradient norms) "
                    "from its saved config.yaml, history.csv and weights.npz.")
    parser.add_argument("target", metavar="TARGET",
                        help="a run's folder (e.g. multirun/<date>/<time>/0) or an MLflow run id")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow store of a run id (default: $MLFLOW_TRACKING_URI, else the "
                             "repository's mlflow.db)")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="folder for the PNGs (default: <run folder>/figures; for a run id "
                             "they are logged to the run under figures/)")
    args = parser.parse_args(argv)
    target = Path(args.target)
    try:
        if target.exists() or not _RUN_ID.fullmatch(args.target):
            if not target.exists():
                raise RunOutputsError(f"{args.target!r} is neither a run folder nor an MLflow "
                                      "run id")
            for path in render_run_figures(target, args.out):
                print(path)
        else:
            logged, artifact_uri = render_mlflow_run(args.target, args.tracking_uri, args.out)
            print(f"logged {', '.join(logged)} to MLflow run {args.target} ({artifact_uri})")
            if args.out:
                print(f"and wrote them into {args.out}")
    except (RunOutputsError, OSError) as exc:
        print(f"{parser.prog}: error: {_first_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
