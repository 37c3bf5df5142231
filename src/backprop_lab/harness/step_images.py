"""A run's images over epochs, for the MLflow UI's image charts (a step slider per key).

At the epochs that have histograms (``histogram_every``, and the last; at most ``MAX_STEPS`` of
them, spread evenly):

- ``gradient_profile``: the gradient norm of every layer at that epoch (log scale), beside the
  profile at initialization, so the slider shows the profile change as the run trains;
- ``histograms``: every layer's histogram of weights, gradients and activations at that
  epoch, one row a layer (64 bins over that layer's own range, written at the row's end),
  counts as shades: saturated units pile up at the ends, dead ones at zero.

Rendered when the run ends (matplotlib's Agg canvas, as harness/run_figures.py) and stored in
MLflow's layout for keyed images (tracking/images.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backprop_lab.harness.run_figures import _figure, _log_y, _save, _title

KINDS = ("weights", "grads", "activations")
PROFILE_KEY = "gradient_profile"
HISTOGRAMS_KEY = "histograms"


#: At most this many steps get images (evenly spread over the histogram epochs, first and
#: last included): each step costs two renders (about 0.15 s each).
MAX_STEPS = 6


def image_steps(histograms, max_steps: int = MAX_STEPS) -> list[int]:
    """The epochs that get images: the histogram epochs, thinned to ``max_steps``."""
    import numpy as np

    epochs = sorted({h.epoch for h in histograms})
    if len(epochs) <= max_steps:
        return epochs
    picks = np.unique(np.linspace(0, len(epochs) - 1, max_steps).round().astype(int))
    return [epochs[i] for i in picks]


def save_profile(history, epoch: int, path: Path, title: str = "") -> None:
    """grad_norm per layer at ``epoch`` (and at initialization, grey), log scale."""
    norms = history.layers["grad_norm"]
    layers = np.arange(1, norms.shape[1] + 1)
    fig, ax = _figure(5.0, 3.4, 1)
    for row, style in ((0, dict(color="0.6", ls="--", label="epoch 0")),
                       (epoch, dict(color="#1f77b4", marker="o", label=f"epoch {epoch}"))):
        values = norms[row]
        ax.plot(layers, np.where(values > 0, values, np.nan), **style)
    _log_y(ax)
    ax.set(xlabel="layer (1 = fed by the input)", ylabel="|dL/dW|")
    ax.set_xticks(layers if layers.size <= 12 else layers[:: int(np.ceil(layers.size / 12))])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    _title(ax, f"{title}  gradient norm per layer, epoch {epoch}".strip(), fontsize=9)
    _save(fig, path)


def save_histograms(histograms, epoch: int, n_layers: int, path: Path, title: str = "") -> None:
    """One panel per kind: layers as rows, 64 bins each over the layer's own range."""
    fig, axes = _figure(9.0, 1.2 + 0.22 * n_layers, len(KINDS))
    fig.subplots_adjust(left=0.06, right=0.93, bottom=0.1, top=0.84, wspace=0.5)
    at = {(h.kind, h.layer): h for h in histograms if h.epoch == epoch}
    for ax, kind in zip(axes, KINDS):
        shades = np.zeros((n_layers, 64))
        for l in range(1, n_layers + 1):
            h = at.get((kind, l))
            if h is not None and h.counts.sum() > 0:
                shades[l - 1] = h.counts / h.counts.max()
                ax.text(64.5, l - 1, f"{h.edges[0]:.2g}..{h.edges[-1]:.2g}", fontsize=5,
                        va="center")
        ax.imshow(shades, aspect="auto", cmap="Greys", origin="lower", interpolation="nearest",
                  extent=(-0.5, 63.5, -0.5, n_layers - 0.5))
        ax.set_yticks(range(0, n_layers, max(1, n_layers // 10)))
        ax.set_yticklabels([str(l + 1) for l in range(0, n_layers, max(1, n_layers // 10))],
                           fontsize=7)
        ax.set_xticks([])
        ax.set_xlim(-0.5, 63.5)
        ax.set_xlabel("bin (layer's own range)", fontsize=7)
        _title(ax, kind, fontsize=9)
    axes[0].set_ylabel("layer", fontsize=8)
    fig.suptitle(f"{title}  histograms, epoch {epoch}".strip(), fontsize=9)
    _save(fig, path)


def save_step_images(history, histograms, folder: Path, times_ms, title: str = "") -> int:
    """Render both keys at every histogram epoch into ``folder`` under MLflow's names;
    ``times_ms[epoch]``: the row's time. Returns the number of images written."""
    from backprop_lab.tracking.images import write_step_image

    if history is None or not histograms or "grad_norm" not in history.layers:
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for epoch in image_steps(histograms):
        if epoch >= history.n_rows:
            continue
        stamp = int(times_ms[epoch])
        tmp = folder / f".render-{epoch}.png"
        save_profile(history, epoch, tmp, title)
        write_step_image(tmp, folder, PROFILE_KEY, epoch, stamp)
        save_histograms(histograms, epoch, history.n_layers, tmp, title)
        write_step_image(tmp, folder, HISTOGRAMS_KEY, epoch, stamp)
        written += 2
    return written
