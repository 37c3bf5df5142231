"""What a job saves into its folder, and which of it goes to MLflow as artifacts.

    config.yaml      the job's resolved config
    weights.npz      sizes and W1..WL, b1..bL of the trained network (blocks: gain1.., shift1..,
                     running_mean1.., running_var1..)
    history.csv      every metric of every epoch: an ``epoch`` column, then one column per
                     MLflow metric name; 9 significant digits, NaN as an empty field
    histograms.npz   per-layer histograms (epoch, layer, kind, counts (h, 64), edges (h, 65));
                     kinds: weights, grads, activations, deltas (back-propagated errors)
    jacobian.npz     the Jacobian spectra, with jacobian_probes > 0 (engine/jacobian.py's
                     JacobianProbe.arrays: epoch, io (n, P, k), layer_NN, theory_mean_sq, ...)
    figures/         the run's figures (run_figures.py), when asked for
    gradient_flow.json   the job's data for the gradient-flow page (analysis/flow_records.py;
                     not logged: a sweep's page is made of its jobs' records)
    gradient_flow.html   a single run's gradient-flow page (analysis/gradient_flow.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from backprop_lab.contract import (
    CONFIG_FILE,
    FIGURES_DIR,
    GRADIENT_FLOW_PAGE,
    HISTOGRAMS_FILE,
    HISTORY_FILE,
    JACOBIAN_FILE,
    WEIGHTS_FILE,
)
from backprop_lab.harness.config import to_plain


def write_history_csv(history, path: Path) -> None:
    """The History's complete rows as CSV (the layout of ``History.to_frame().to_csv``)."""
    names, columns = zip(*history.metric_items())
    values = np.column_stack(columns)  # (rows, metrics)
    line = ",".join(["%d"] + ["%.9g"] * len(names))
    with path.open("w") as f:
        f.write(",".join(("epoch", *names)) + "\n")
        for epoch, row in enumerate(values.tolist()):
            f.write((line % (epoch, *row)).replace("nan", "") + "\n")


def save_outputs(cfg: DictConfig, net, dataset, history, histograms, folder: Path,
                 *, figures: bool, title: str, write_history: bool = True,
                 jacobian: dict | None = None) -> None:
    """config.yaml (credentials masked), weights.npz, history.csv (unless ``write_history`` is
    false: harness/history_log.py wrote it as training went), histograms.npz, jacobian.npz and
    figures/ into ``folder``."""
    from backprop_lab.tracking.secrets import mask_tree

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(OmegaConf.to_yaml(mask_tree(to_plain(cfg))))
    arrays = {f"W{l + 1}": W for l, W in enumerate(net.weights)}
    arrays |= {f"b{l + 1}": b for l, b in enumerate(net.biases)}
    # Blocks (engine/blocks.py): normalization gains and shifts, batch norm's running statistics.
    for l, (gain, shift) in enumerate(zip(getattr(net, "gains", []), getattr(net, "shifts", []))):
        arrays |= {f"gain{l + 1}": gain, f"shift{l + 1}": shift}
    if getattr(net, "norm", "none") == "batch":
        arrays |= {f"running_mean{l + 1}": v for l, v in enumerate(net.running_mean)}
        arrays |= {f"running_var{l + 1}": v for l, v in enumerate(net.running_var)}
    np.savez(folder / WEIGHTS_FILE, sizes=np.array(net.sizes), **arrays)
    if write_history and history is not None and history.n_rows:
        write_history_csv(history, folder / HISTORY_FILE)
    if histograms:
        np.savez_compressed(
            folder / HISTOGRAMS_FILE,
            epoch=np.array([h.epoch for h in histograms]),
            layer=np.array([h.layer for h in histograms]),
            kind=np.array([h.kind for h in histograms]),
            counts=np.stack([h.counts for h in histograms]),
            edges=np.stack([h.edges for h in histograms]),
        )
    if jacobian:
        np.savez_compressed(folder / JACOBIAN_FILE, **jacobian)
    if figures and history is not None and history.n_rows:
        from backprop_lab.harness.run_figures import save_run_figures

        save_run_figures(net, dataset, history, folder / FIGURES_DIR, title)


def artifact_specs(folder: Path) -> list:
    """The files of a job's folder that are logged to its run (missing ones are skipped)."""
    from backprop_lab.tracking import ArtifactSpec

    return [
        ArtifactSpec(folder / CONFIG_FILE),
        ArtifactSpec(folder / ".hydra", "hydra"),
        ArtifactSpec(folder / WEIGHTS_FILE),
        ArtifactSpec(folder / HISTORY_FILE),
        ArtifactSpec(folder / HISTOGRAMS_FILE),
        ArtifactSpec(folder / JACOBIAN_FILE),
        ArtifactSpec(folder / FIGURES_DIR, FIGURES_DIR),
        ArtifactSpec(folder / GRADIENT_FLOW_PAGE),  # a single run's page (harness/ending.py)
    ]
