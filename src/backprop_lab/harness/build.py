"""From a composed config to the engine's objects: the data set, the network, the optimizer.

The engine checks every value it is given; :func:`build` says its errors in config keys
(``optimizer.lr=-1.0: learning rate must be a positive number; got lr=-1.0``), so a bad value
is named before any MLflow run exists, by the one piece of code that knows what is valid.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig

from backprop_lab.engine.initializers import NAMED_SIGMA_W2
from backprop_lab.engine.run_summary import chance_of, geometric_mean, theory_factor
from backprop_lab.harness.config import (
    ConfigError,
    config_value,
    hidden_sizes,
    to_plain,
    validate,
)


@dataclass
class Built:
    """Everything a job trains, built from its config before any MLflow run is opened."""

    dataset: Any
    net: Any
    optimizer: Any
    shuffle_rng: Any
    batch_size: int | None


def random_streams(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """(data, weights, shuffling) random sources for ``cfg.rng``.

    ``generator``: independent child streams of default_rng(seed), so changing the data set
    does not change the initial weights. ``legacy``: one RandomState(seed) shared in the
    reference notebook's order (data first, then weights).
    """
    if cfg.rng.name == "legacy":
        state = np.random.RandomState(cfg.seed)
        return state, state, state
    data, weights, shuffle = np.random.default_rng(cfg.seed).spawn(3)
    return data, weights, shuffle


#: Words of the engine's error messages that mean a config key other than by its own name.
ENGINE_WORDS = {"lr": "learning rate", "name": "data set", "init": "initializer",
                "output": "output/loss", "hidden": "layer width", "width": "layer width"}


def engine_error(exc: ValueError, cfg: DictConfig, keys: list[str]) -> ConfigError:
    """The engine's own error, said in config keys: ``key=value: <engine message>`` for the
    first of ``keys`` the message is about (by the key's last name, or the word the engine uses
    for it), else the message alone."""
    text = str(exc)
    for key in keys:
        name = key.rsplit(".", 1)[-1]
        words = ENGINE_WORDS.get(name)
        if re.search(rf"\b{re.escape(name)}\b", text) or (words is not None and words in text):
            return ConfigError(f"{key}={config_value(cfg, key)}: {text}")
    return ConfigError(text)


def build(cfg: DictConfig) -> Built:
    """Data set, network and optimizer of a job, built by the engine, which checks every value;
    a bad one raises ConfigError naming its config key, the value and the engine's reason."""
    from backprop_lab.engine.blocks import make_network
    from backprop_lab.engine.datasets import load_dataset
    from backprop_lab.engine.optimizers import make_optimizer
    from backprop_lab.engine.training import check_arguments

    validate(cfg)  # what the engine cannot check (BLAS threads, tracking)
    dtype = np.dtype(cfg.dtype.name)
    try:
        data_rng, init_rng, shuffle_rng = random_streams(cfg)
    except (ValueError, TypeError, OverflowError) as exc:  # numpy's words name no key
        high = "2**32 - 1" if cfg.rng.name == "legacy" else "any size"
        raise ConfigError(f"seed={cfg.seed}: must be an integer >= 0 (rng={cfg.rng.name}: up "
                          f"to {high}); numpy says: {exc}") from None
    try:
        ds = load_dataset(cfg.dataset.name, n_samples=cfg.dataset.n_samples,
                          noise=cfg.dataset.noise, val_fraction=cfg.dataset.val_fraction,
                          rng=data_rng, dtype=dtype)
    except ValueError as exc:
        raise engine_error(exc, cfg, [f"dataset.{k}" for k in cfg.dataset]) from None
    output = cfg.model.output.name
    output = ds.default_output if output == "auto" else output
    if output == "softmax_ce":  # a softmax over two classes needs two target rows
        ds = ds.one_hot()
    try:
        net = make_network([ds.n_features, *hidden_sizes(cfg.model), ds.n_outputs],
                           activation=cfg.activation.name,
                           output=output,
                           init=cfg.model.init.name, rng=init_rng, dtype=dtype,
                           sigma_w2=cfg.model.sigma_w2, sigma_b2=cfg.model.sigma_b2,
                           residual=cfg.model.residual,
                           residual_scale=float(cfg.model.residual_scale),
                           norm=cfg.model.norm.name)
    except ValueError as exc:
        raise engine_error(exc, cfg, ["activation", "dtype",
                                      *(f"model.{k}" for k in cfg.model)]) from None
    hyper = {k: v for k, v in to_plain(cfg.optimizer).items() if k not in ("name", "batch_size")}
    # A config composed without the key (an old run's saved config) clips nothing.
    hyper.setdefault("clip_norm", None)
    try:
        optimizer = make_optimizer(cfg.optimizer.name, **hyper)
        check_arguments(net, ds, cfg.epochs, cfg.optimizer.batch_size, cfg.histogram_every,
                        diagnostics=cfg.diagnostics)
    except ValueError as exc:
        raise engine_error(exc, cfg, ["epochs", "histogram_every",
                                      *(f"optimizer.{k}" for k in cfg.optimizer),
                                      *(f"dataset.{k}" for k in cfg.dataset),
                                      *(f"model.{k}" for k in cfg.model)]) from None
    return Built(ds, net, optimizer, shuffle_rng, cfg.optimizer.batch_size)


def derived_params(built: Built) -> dict[str, Any]:
    """``net.*`` and ``data.*`` params the analysis code filters on."""
    net, ds = built.net, built.dataset
    hidden = net.sizes[1:-1]
    return {
        "net.n_layers": net.n_layers,
        "net.depth": len(hidden),
        "net.width": max(hidden, default=0),
        "net.init": net.init,
        # sigma_w^2 = fan_in Var(W) (the named initializers': for equal widths) and sigma_b^2
        "net.sigma_w2": net.sigma_w2 if net.sigma_w2 is not None else NAMED_SIGMA_W2[net.init],
        "net.sigma_b2": net.sigma_b2,
        "net.output": net.head.name,
        "net.n_params": net.params.size,
        "net.repr": repr(net),
        "data.n_features": ds.n_features,
        "data.n_classes": ds.n_classes,
        "data.n_train": ds.n_train,
        "data.n_val": ds.n_val,
        "data.input_var": input_var(ds),
        # What a constant answer scores, and the margin above it (engine/run_summary.py).
        "data.chance_accuracy": (chance := chance_of(ds)).accuracy,
        "data.chance_tolerance": chance.tolerance,
    }


def input_var(ds) -> float:
    """q^0 of mean-field theory (engine/theory.py): the mean squared standardized input."""
    return float(np.mean(np.square(ds.X_train)))


def theory_factor_of(built: Built) -> float:
    """Mean-field theory's per-layer factor of delta_std at initialization for the job's
    network and data (engine/run_summary.py; NaN when it has fewer than 3 layers)."""
    net = built.net
    if getattr(net, "norm", "none") != "none":
        return math.nan  # no mean field for normalization layers (docs/cures.md)
    if getattr(net, "residual", False):
        if net.init in ("gaussian", "orthogonal"):
            return math.nan  # residual_mean_field takes the named initializers' sigma_w^2
        from backprop_lab.engine.residual_theory import residual_mean_field

        if len(net.sizes) < 4:
            return math.nan
        factors = residual_mean_field(net.activation.name, net.init, net.sizes,
                                      residual_scale=net.residual_scale,
                                      input_var=input_var(built.dataset),
                                      sigma_b2=net.sigma_b2).std_factors
        return geometric_mean(factors[: len(net.sizes) - 3])
    return theory_factor(net.activation.name, net.init, net.sizes, input_var(built.dataset),
                         sigma_b2=net.sigma_b2, sigma_w2=net.sigma_w2)
