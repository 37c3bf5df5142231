"""A synthetic MLflow sweep that follows the harness contract, for tests and loader benchmarks.

The real store is written by ``train.py -m ...``. This module writes the same shape of data
(a parent run tagged ``backprop_lab.role=sweep``, one child per job with flattened params,
per-epoch metrics with step = epoch and a ``history.csv`` artifact) without training anything,
so the analysis layer can be exercised, and its loaders timed, on any number of runs and layers.
The numbers are made up but follow the linear-regime theory: the std of the back-propagated
error shrinks by a fixed factor per layer toward the input.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from backprop_lab.contract import OUTCOME_TAG, ROLE_TAG
from backprop_lab.engine.history import layer_metric_name

# Per-layer std factor of the back-propagated error for the default (auto) inits, used only to
# shape the synthetic numbers: sigmoid+lecun sqrt(1/16), tanh+lecun 1, relu+he 1.
_DEMO_FACTOR = {"sigmoid": 0.25, "tanh": 0.9, "relu": 1.0}
_DEMO_INIT = {"sigmoid": "lecun", "tanh": "lecun", "relu": "he"}


@dataclass(frozen=True)
class DemoSweep:
    """What :func:`write_demo_sweep` created: the store URI and the run ids."""

    uri: str
    experiment_id: str
    parent_run_id: str
    child_run_ids: tuple[str, ...]


def _demo_history(activation: str, depth: int, epochs: int, seed: int, lr: float) -> pd.DataFrame:
    """One run's history as the engine's ``History.to_frame()`` would give it (index epoch)."""
    rng = np.random.default_rng([seed, depth, len(activation)])
    n_layers = depth + 1
    factor = _DEMO_FACTOR[activation]
    epoch = np.arange(epochs + 1)
    # Learning gets slower with depth when the signal vanishes.
    rate = 0.6 * factor**depth + 0.05
    loss = 0.69 * np.exp(-rate * epoch) + 0.02 * rng.random(epoch.size)
    columns: dict[str, np.ndarray] = {
        "train/loss": loss,
        "train/accuracy": np.clip(1.0 - loss / 1.38, 0.0, 1.0),
        "val/loss": loss * 1.1,
        "val/accuracy": np.clip(1.0 - loss * 1.1 / 1.38, 0.0, 1.0),
    }
    top = 0.05 * (1 + 0.1 * rng.standard_normal())
    for layer in range(1, n_layers + 1):
        below_top = max(n_layers - 1 - layer, 0)
        # Training pulls the per-layer factor part of the way toward 1.
        layer_factor = factor ** (below_top * (1.0 - 0.3 * epoch / max(epochs, 1)))
        delta_std = top * layer_factor * np.exp(0.05 * rng.standard_normal(epoch.size))
        weight_norm = 4.0 + 0.01 * epoch + rng.random()
        grad_norm = 3.0 * delta_std
        update = lr * grad_norm / weight_norm
        update[-1] = np.nan
        depth_share = layer / n_layers
        saturation = (
            np.clip(0.1 * depth_share + 0.02 * epoch, 0, 1)
            if activation != "relu"
            else np.zeros(epoch.size)
        )
        dead = np.clip(0.1 + 0.02 * epoch * depth_share, 0, 1) if activation == "relu" else 0.0
        columns |= {
            layer_metric_name("grad_weight_ratio", layer): grad_norm / weight_norm,
            layer_metric_name("grad_norm", layer): grad_norm,
            layer_metric_name("weight_norm", layer): np.full(epoch.size, weight_norm, dtype=float),
            layer_metric_name("update_ratio", layer): update,
            layer_metric_name("delta_std", layer): delta_std,
            layer_metric_name("act_mean", layer): np.full(epoch.size,
                                                          0.5 if activation == "sigmoid" else 0.0),
            layer_metric_name("act_std", layer): np.full(epoch.size, 0.3),
            layer_metric_name("saturation", layer): saturation,
            layer_metric_name("dead_fraction", layer): np.full(epoch.size, 1.0) * dead,
        }
    return pd.DataFrame(columns, index=pd.Index(epoch, name="epoch"))


def write_demo_sweep(
    store_dir: str | Path | None,
    *,
    uri: str | None = None,
    activations: Sequence[str] = ("sigmoid", "tanh", "relu"),
    depths: Sequence[int] = (2, 5),
    seeds: Sequence[int] = (0, 1),
    epochs: int = 5,
    width: int = 16,
    experiment: str = "backprop-lab",
    sweep_name: str = "demo-sweep",
    log_metrics: bool = True,
) -> DemoSweep:
    """Write one synthetic multirun into ``sqlite:///<store_dir>/mlflow.db``, artifacts in
    ``<store_dir>/mlartifacts`` as the harness does; or, with ``uri`` (a tracking server), into
    that store with the server's default artifact location. ``log_metrics=False`` skips
    the per-epoch metric values (only ``history.csv`` and the final values are written), which is
    much faster for big benchmark stores but leaves nothing for the metric-history fallback.
    """
    location = None
    if uri is None:
        if store_dir is None:
            raise ValueError("give store_dir (a SQLite store is made there) or uri")
        store_dir = Path(store_dir).resolve()
        store_dir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{store_dir / 'mlflow.db'}"
        location = (store_dir / "mlartifacts").as_uri()
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id if found
        else client.create_experiment(experiment, artifact_location=location)
    )
    parent = client.create_run(
        experiment_id, run_name=sweep_name, tags={ROLE_TAG: "sweep"}
    )
    parent_id = parent.info.run_id
    children = []
    lr = 0.5
    for depth in depths:
        for activation in activations:
            for seed in seeds:
                overrides = f"activation={activation},model=deep,model.depth={depth},seed={seed}"
                run = client.create_run(
                    experiment_id,
                    run_name=f"{activation}-d{depth}-s{seed}",
                    tags={
                        "mlflow.parentRunId": parent_id,
                        ROLE_TAG: "job",
                        OUTCOME_TAG: "finished",
                        "hydra.overrides": overrides,
                        "choice.dataset": "spiral",
                        "choice.model": "deep",
                        "choice.optimizer": "gd",
                    },
                )
                run_id = run.info.run_id
                init = _DEMO_INIT[activation]
                params = {
                    "activation": activation,
                    "seed": seed,
                    "epochs": epochs,
                    "dataset.name": "spiral",
                    "dataset.n_samples": 200,
                    "dataset.noise": 0.3,
                    "model.name": "deep",
                    "model.depth": depth,
                    "model.width": width,
                    "model.init": "auto",
                    "optimizer.name": "gd",
                    "optimizer.lr": lr,
                    "optimizer.batch_size": "None",
                    "net.n_layers": depth + 1,
                    "net.depth": depth,
                    "net.width": width,
                    "net.init": init,
                    "net.repr": f"MLP(2-{'-'.join([str(width)] * depth)}-1, {activation}, {init})",
                }
                client.log_batch(
                    run_id, params=[Param(k, str(v)) for k, v in params.items()]
                )
                frame = _demo_history(activation, depth, epochs, seed, lr)
                if log_metrics:
                    metrics = [
                        Metric(key, float(value), 0, int(step))
                        for key in frame.columns
                        for step, value in frame[key].items()
                    ]
                else:
                    last = frame.iloc[-1]
                    metrics = [Metric(k, float(v), 0, epochs) for k, v in last.items()]
                for start in range(0, len(metrics), 1000):
                    client.log_batch(run_id, metrics=metrics[start : start + 1000])
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "history.csv"
                    frame.to_csv(path)
                    client.log_artifact(run_id, str(path))
                client.set_terminated(run_id, "FINISHED")
                children.append(run_id)
    client.log_batch(parent_id, tags=[RunTag(OUTCOME_TAG, "finished")])
    client.set_terminated(parent_id, "FINISHED")
    return DemoSweep(uri, experiment_id, parent_id, tuple(children))
