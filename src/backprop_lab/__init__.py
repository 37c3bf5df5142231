"""backprop-lab: a research harness for studying how gradients flow through neural networks.

The engine (numpy, features x samples) lives in small modules named for what they hold:
activations, losses, initializers, network, optimizers, datasets, diagnostics, history,
training and theory. The Hydra app and MLflow tracking build on it (app, config, tracking).
"""

from backprop_lab.datasets import DATASETS, Dataset, load_dataset
from backprop_lab.network import MLP
from backprop_lab.optimizers import OPTIMIZERS, make_optimizer
from backprop_lab.training import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "DATASETS",
    "MLP",
    "OPTIMIZERS",
    "Dataset",
    "TrainResult",
    "load_dataset",
    "make_optimizer",
    "train",
]
