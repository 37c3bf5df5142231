"""backprop-lab: a research harness for studying how gradients flow through neural networks.

    engine/     the numpy engine: networks, training, diagnostics (no Hydra, no MLflow)
    harness/    the Hydra app: configs, one job from config to recorded run, sweeps, launchers
    tracking/   MLflow stores: the direct SQLite writer, the tracking server
    analysis/   runs back into pandas, seaborn figures, the report
    contract    the names all of them share (tags, files, the default store, telemetry)

The engine's main entry points are importable from here: ``MLP``, ``train``, ``load_dataset``,
``make_optimizer``, ``mean_field``; the cures' ``make_network``/``BlockMLP`` and
``residual_mean_field``.
"""

from importlib import import_module

from backprop_lab.contract import telemetry_off

__version__ = "0.1.0"

# MLflow's telemetry and Ray's usage stats off (unless the environment says otherwise), once,
# where the package starts: before any of its modules can import mlflow or ray, here and in the
# processes it starts (they inherit the environment).
telemetry_off()

#: name -> module of the engine's entry points, imported on first use (PEP 562), so that
#: ``import backprop_lab.contract`` or ``backprop_lab.tracking`` does not load the engine.
_EXPORTS = {
    "DATASETS": "backprop_lab.engine.datasets",
    "Dataset": "backprop_lab.engine.datasets",
    "load_dataset": "backprop_lab.engine.datasets",
    "MLP": "backprop_lab.engine.network",
    "BlockMLP": "backprop_lab.engine.blocks",
    "make_network": "backprop_lab.engine.blocks",
    "residual_mean_field": "backprop_lab.engine.residual_theory",
    "OPTIMIZERS": "backprop_lab.engine.optimizers",
    "make_optimizer": "backprop_lab.engine.optimizers",
    "TrainResult": "backprop_lab.engine.training",
    "train": "backprop_lab.engine.training",
    "mean_field": "backprop_lab.engine.theory",
    "depth_scale": "backprop_lab.engine.theory",
    "critical_sigma_w2": "backprop_lab.engine.theory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'backprop_lab' has no attribute {name!r}")
