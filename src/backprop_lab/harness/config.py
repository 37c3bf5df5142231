"""The configuration schema (Hydra structured configs) and the checks Hydra cannot make.

The dataclasses below are registered in Hydra's ConfigStore as schemas; the YAML files in
``conf/`` fill them in (each group file starts with ``defaults: [<schema>, _self_]``). A typo in
a key or a value of the wrong type therefore fails at composition with Hydra's own message, and
names (activation, init, output, rng, dtype) are Enums so a bad one lists the valid choices.
What types cannot express (lr > 0, positive widths, a data set the engine knows) is checked by
the engine itself when the harness builds a job (harness/app.py's ``build``), on every job's
config before any MLflow run exists; :func:`validate` checks only what the engine does not see.

Experiments live in ``<repo>/experiments/`` (not under ``conf/``): :func:`register_configs`
stores each file there in the ``experiment`` group, so ``experiment=NAME`` works from any
working directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from backprop_lab.contract import EXPERIMENTS_DIR
from backprop_lab.engine.activations import ACTIVATIONS
from backprop_lab.engine.history import LAYER_METRICS, LOG10_METRICS
from backprop_lab.engine.initializers import INIT_CHOICES
from backprop_lab.engine.losses import OUTPUTS

# Enums built from the engine's registries: adding an activation to activations.ACTIVATIONS
# makes it a valid `activation=` value with nothing to edit here.
Activation = Enum("Activation", {name: name for name in ACTIVATIONS}, module=__name__)
Init = Enum("Init", {name: name for name in INIT_CHOICES}, module=__name__)
Output = Enum("Output", {"auto": "auto", **{name: name for name in OUTPUTS}}, module=__name__)


class Norm(Enum):
    """Normalization before each hidden activation (engine/blocks.py): ``layer`` over a sample's
    units, ``batch`` over the batch's samples (running statistics for validation)."""

    none = "none"
    layer = "layer"
    batch = "batch"


class RandomStream(Enum):
    """``generator``: np.random.default_rng(seed) with separate child streams for data, weights
    and shuffling. ``legacy``: one RandomState(seed), data drawn first, then weights (as the
    reference notebook's ``np.random.seed(42)``)."""

    generator = "generator"
    legacy = "legacy"


class DType(Enum):
    float64 = "float64"
    float32 = "float32"


@dataclass
class DatasetConfig:
    name: str = MISSING
    n_samples: int | None = None  # None: the data set's own size (per class for spiral)
    noise: float | None = None  # None: the data set's own default
    val_fraction: float = 0.2  # held out for val/* metrics; 0 trains on everything


@dataclass
class ModelConfig:
    name: str = MISSING
    init: Init = Init.auto  # auto: he for relu/leaky_relu, lecun otherwise (the notebook's rule)
    # sigma_w^2 = fan_in Var(W) for init=gaussian/orthogonal (null: 1); the named initializers
    # have their own (engine/initializers.py) and reject a value here.
    sigma_w2: float | None = None
    sigma_b2: float = 0.0  # biases drawn N(0, sigma_b2); 0: zeros
    output: Output = Output.auto  # auto: sigmoid_bce for 2 classes, softmax_ce for more
    # The cures (engine/blocks.py): a skip path a^l = a^{l-1} + residual_scale f(...) around
    # every hidden layer but the first (equal hidden widths), and normalization before the
    # activation.
    residual: bool = False
    residual_scale: float = 1.0
    norm: Norm = Norm.none


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [16, 8])


@dataclass
class DeepConfig(ModelConfig):
    """``depth`` hidden layers of ``width`` units each: the knob of vanishing-gradient studies."""

    name: str = "deep"
    depth: int = 5
    width: int = 32


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 0.01
    batch_size: int | None = None  # None: full batch
    weight_decay: float = 0.0
    # Clip the global L2 norm of the gradient to this before each update; null: never.
    clip_norm: float | None = None


@dataclass
class MomentumConfig(OptimizerConfig):
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerConfig):
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass
class TrackingConfig:
    enabled: bool = True
    # None: $MLFLOW_TRACKING_URI if set, else sqlite:///<repo>/mlflow.db. Relative SQLite paths
    # are resolved against the directory the command was started from.
    uri: str | None = None
    experiment: str = "backprop-lab"
    # None: <store folder>/mlartifacts for SQLite; the server's choice over HTTP.
    artifact_location: str | None = None
    log_every: int = 1  # MLflow gets every n-th epoch (and the last); history.csv has them all
    # Per-layer metrics whose log10 MLflow also gets, as <metric>_log10/layer_NN, so the UI's
    # linear axes read quantities that span decades; [] for none (engine/history.py).
    log10: list[str] = field(default_factory=lambda: list(LOG10_METRICS))
    # Removed: the step images of the UI's image charts (a config dump above a thumbnail in
    # MLflow 3.17), replaced by the gradient-flow page. Kept in the schema only so that a
    # command that still sets it fails with that news (validate) rather than "no such key".
    images: bool | None = None
    log_artifacts: bool = True


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    tracking: TrackingConfig = MISSING
    activation: Activation = Activation.tanh
    seed: int = 42
    epochs: int = 1000
    rng: RandomStream = RandomStream.generator
    dtype: DType = DType.float64
    threads: int | None = 1  # BLAS threads per job (threadpoolctl); None leaves BLAS alone
    diagnostics: bool = True  # per-layer gradient/activation statistics every epoch
    histogram_every: int = 100  # weight/grad/activation histograms every n epochs; 0 = none
    # Singular values of the input-output Jacobian on this many probe inputs, at init, at the
    # histogram epochs and at the end (engine/jacobian.py): jacobian/* metrics and jacobian.npz.
    # 0: off.
    jacobian_probes: int = 0
    progress: bool = True  # tqdm bar per run
    # The run's figures (curves, decision boundary, gradient flow) in its folder and artifacts.
    # null: for a single run, not for each job of a sweep (render any run's later with
    # `python -m backprop_lab.harness.run_figures RUN_ID`); true/false: always/never.
    figures: bool | None = None
    # At the end of a sweep, the analysis report (analysis/report.py: figures and summary)
    # into the sweep's folder and its parent run's artifacts (report/), linked from the
    # parent's description.
    report: bool = False
    # Grid sweeps: rerun only the jobs an earlier sweep did not finish, as children of its
    # parent run (harness/resume.py). true: the experiment's latest sweep; or its parent run id,
    # or its sweep folder. null: a new sweep.
    resume: str | None = None


# Schemas live under schema/ (not in the groups themselves, so `--help` and Hydra's "available
# options" list only real choices); every group file starts with
# `defaults: [/schema/<name>@_here_, _self_]`.
SCHEMAS: dict[str, type] = {
    "config": Config,
    "dataset": DatasetConfig,
    "mlp": MLPConfig,
    "deep": DeepConfig,
    "optimizer": OptimizerConfig,
    "momentum": MomentumConfig,
    "adam": AdamConfig,
    "tracking": TrackingConfig,
}


def register_configs(experiments_dir: Path = EXPERIMENTS_DIR) -> None:
    """Store the schemas and the experiment files in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(group="schema", name=name, node=node)
    for path in sorted(Path(experiments_dir).glob("*.yaml")):
        # Every experiment is a `# @package _global_` override file; stored under that package.
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


#: Deeper than any study here; the list of widths is built before the engine sees it.
MAX_DEPTH = 10_000
#: The largest dataset.noise (a standard deviation, against data of scale about 1).
MAX_NOISE = 1000.0


class ConfigError(ValueError):
    """A config value that composes but makes no sense (e.g. a negative learning rate)."""


def hidden_sizes(model: DictConfig | Any) -> list[int]:
    """The hidden widths of either model group: ``model.hidden`` or ``depth`` x ``width``."""
    if "hidden" in model:
        return [int(w) for w in model.hidden]
    return [int(model.width)] * int(model.depth)


def _name(value: Any) -> str:
    return value.name if isinstance(value, Enum) else str(value)


def config_value(cfg: DictConfig, key: str) -> str:
    """The value at ``key`` as the command line writes it (enums by name, lists as lists)."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    return str(_name(value))


IMAGES_REMOVED = ("removed: the step images are replaced by the interactive page "
                  "gradient_flow.html among the run's artifacts (a sweep's: its parent run's); "
                  "drop the override")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming every bad value the engine does not check (it checks its own
    arguments when the harness builds a job: harness/app.py's ``build``)."""
    errors = [
        f"{key}={config_value(cfg, key)}: {allowed}"
        for key, ok, allowed in (
            ("threads", cfg.threads is None or cfg.threads >= 1,
             "must be a positive integer (or null to leave BLAS alone)"),
            ("tracking.log_every", cfg.tracking.log_every >= 1, "must be a positive integer"),
            ("jacobian_probes", cfg.jacobian_probes >= 0,
             "must be an integer >= 0 (0: no Jacobian spectrum)"),
            # engine/jacobian.py multiplies the plain layers' D_l W_l: a skip path or a
            # normalization would make that product a different network's Jacobian.
            ("jacobian_probes", cfg.jacobian_probes == 0
             or (not cfg.model.residual and str(_name(cfg.model.norm)) == "none"),
             "the Jacobian spectrum is measured for plain networks only "
             "(model.residual=false, model.norm=none)"),
            ("tracking.log10", set(cfg.tracking.log10) <= set(LAYER_METRICS),
             f"must list per-layer metrics, of {', '.join(LAYER_METRICS)}"),
            ("tracking.images", cfg.tracking.get("images") is None, IMAGES_REMOVED),
            # depth x width becomes the engine's layer sizes: a depth below 1 would be no error
            # there, just no hidden layer.
            ("model.depth", "depth" not in cfg.model or 1 <= cfg.model.depth <= MAX_DEPTH,
             f"must be an integer from 1 to {MAX_DEPTH}"),
        )
        if not ok
    ]
    noise = cfg.dataset.get("noise")
    if noise is not None and not (math.isfinite(noise) and noise <= MAX_NOISE):  # < 0: engine
        errors.append(f"dataset.noise={noise}: must be a finite number from 0 to {MAX_NOISE:g} "
                      "(the data's scale is about 1: far above it the classes are pure noise, "
                      "and standardizing overflows)")
    if cfg.tracking.enabled:
        from backprop_lab.tracking.uris import check_experiment_name, check_tracking_uri

        for check, value in ((check_experiment_name, cfg.tracking.experiment),
                             (check_tracking_uri, cfg.tracking.uri)):
            try:
                if value is not None or check is check_experiment_name:
                    check(value)
            except ValueError as exc:
                errors.append(str(exc))
    if errors:
        raise ConfigError("; ".join(errors))


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain Python (enums as names, interpolations resolved)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts/lists with dots: {"model": {"hidden": [16, 8]}} -> model.hidden.0."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    if not out and prefix:
        out[prefix] = "[]" if isinstance(tree, list | tuple) else "{}"
    return out


def _critical_sigma_w2(activation: Any, sigma_b2: Any = 0.0) -> float:
    """``${critical_sigma_w2:${activation},${model.sigma_b2}}``: the sigma_w^2 at which an
    activation's chi_1 is 1 for bias variance sigma_b2 (engine/theory.py), to 4 decimals, so
    that a config can put a network at criticality for whichever activation a sweep picks."""
    from backprop_lab.engine.theory import critical_sigma_w2

    name = activation.name if isinstance(activation, Enum) else str(activation)
    return round(float(critical_sigma_w2(name, float(sigma_b2))), 4)


OmegaConf.register_new_resolver("critical_sigma_w2", _critical_sigma_w2, replace=True)
