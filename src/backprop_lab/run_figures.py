"""The figures saved with every run: the reference notebook's four panels, improved.

``curves.png``: loss (train and validation, log scale) and accuracy (train and validation);
``decision_boundary.png`` (2-D data only): the data (train and validation marked apart) and the
learned decision boundary over it; ``gradients.png``: every layer's gradient norm over training
(log scale), the picture of vanishing or exploding gradients.

matplotlib's object API (``Figure``) is used, not pyplot, so no GUI backend or global state is
involved when jobs run in worker processes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASS_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LIGHT_COLORS = ("#f4b6b6", "#b4cdee", "#b9e3b9", "#ffd3ad", "#d7c6e8",
                "#d9c3be", "#f6c9e7", "#d4d4d4", "#e8e8a8", "#b3eef3")
GRID_POINTS = 150  # per axis
CHUNK = 2048  # grid points per forward pass: bounds the workspace memory of deep networks


def _figure(width: float, height: float, ncols: int):
    """A pyplot-free figure and its axes (one Axes when ncols == 1, else an array)."""
    from matplotlib.figure import Figure

    # Fixed margins: constrained/tight layout would cost ~0.3 s a figure, more than training
    # the reference network.
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.08 if ncols > 1 else 0.12, right=0.97, bottom=0.12, top=0.86,
                        wspace=0.25)
    return fig, fig.subplots(1, ncols)


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
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.05), title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)


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
    ax.set(xlabel="epoch", ylabel="|dL/dW| (Frobenius)", yscale="log")
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=10)
    ax.grid(True, alpha=0.3)
    if n_layers <= 12:
        ax.legend(fontsize="small", ncols=2)
    else:  # too many lines for a legend: a colour scale of layer numbers
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        fig.colorbar(ScalarMappable(Normalize(1, n_layers), cmap), ax=ax, label="layer")
    fig.savefig(path, dpi=100)
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
        ax.set(xlabel="$x_1$", ylabel="$x_2$", xlim=(x0, x1), ylim=(y0, y1))
        ax.grid(True, alpha=0.3)
    ax_data.set_title(f"Data: {dataset.name} ({dataset.n_train} train, {dataset.n_val} val)")
    ax_data.legend(loc="upper right", fontsize="small")
    ax_boundary.set_title(f"Decision boundary: {net!r}")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
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
