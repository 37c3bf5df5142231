"""Every config group option and every experiment composes (Hydra's compose API), the defaults
are the reference notebook's, the interface keys exist, and bad values fail with clear messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from backprop_lab.contract import CONF_DIR, EXPERIMENTS_DIR
from backprop_lab.engine.datasets import DATASETS
from backprop_lab.harness.build import build
from backprop_lab.harness.config import ConfigError, flatten, register_configs
from backprop_lab.harness.sweep_configs import task_config

GROUPS = ("dataset", "model", "optimizer", "tracking")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
# Small enough that building every data set and network is instant.
SHRINK = ["epochs=2", "dataset.n_samples=10"]


def make(overrides: list[str] = ()):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_defaults_are_the_reference_notebook() -> None:
    cfg = make()
    assert cfg.dataset.name == "spiral" and cfg.dataset.n_samples == 200
    assert cfg.dataset.noise == 0.3 and cfg.dataset.val_fraction == 0.2
    assert cfg.model.name == "mlp" and list(cfg.model.hidden) == [16, 8]
    assert cfg.activation.name == "tanh" and cfg.model.init.name == "auto"
    assert cfg.optimizer.name == "gd" and cfg.optimizer.lr == 0.5
    assert cfg.optimizer.batch_size is None and cfg.epochs == 1000
    assert cfg.tracking.enabled and cfg.tracking.log_every == 1 and cfg.threads == 1
    built = build(cfg)
    assert repr(built.net) == "MLP(2-16-8-1, tanh, lecun)"
    assert built.net.head.name == "sigmoid_bce"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_and_builds(group: str, option: str) -> None:
    shrink = SHRINK if group != "dataset" or option == "spiral" else ["epochs=2"]
    cfg = make([f"{group}={option}", *shrink])
    if group != "tracking":
        assert cfg[group].name == option  # the file's name key matches the file
    built = build(cfg)
    assert built.net.sizes[0] == built.dataset.n_features


def test_every_data_set_has_a_config_file() -> None:
    files = {p.stem for p in (CONF_DIR / "dataset").glob("*.yaml")}
    assert files == set(DATASETS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_builds_and_documents_its_runs(name: str) -> None:
    text = (EXPERIMENTS_DIR / f"{name}.yaml").read_text()
    assert text.splitlines()[0] == "# @package _global_"
    claimed = re.search(r"Runs: .*?(\d+) runs?\b", text)
    assert claimed, f"{name}.yaml must say how many runs it makes ('Runs: ... = N runs')"
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
    n_runs = 1
    search = "grid" in full.hydra.sweeper  # the Optuna sweeper: n_trials per grid combination
    for values in (full.hydra.sweeper.grid if search else full.hydra.sweeper.params or {}).values():
        n_runs *= len(str(values).split(","))
    if search:
        n_runs *= full.hydra.sweeper.n_trials
    assert int(claimed.group(1)) == n_runs
    assert full.tracking.log_every == 1  # every metric of every epoch, in every experiment
    build(task_config(full))


def test_seed_notebook_uses_the_legacy_stream_and_all_the_data() -> None:
    cfg = make(["experiment=seed_notebook"])
    assert cfg.rng.name == "legacy" and cfg.dataset.val_fraction == 0 and cfg.seed == 42
    built = build(cfg)
    assert built.dataset.n_train == 400 and built.dataset.n_val == 0


def test_vanishing_gradients_sweeps_36_runs() -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=vanishing_gradients"],
                      return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params)
    assert params == {"activation": "sigmoid,tanh,relu", "model.depth": "2,5,10,20",
                      "seed": "0,1,2"}
    assert cfg.model.name == "deep"


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("activation=relu", "activation", "relu"),
        ("seed=3", "seed", 3),
        ("epochs=7", "epochs", 7),
        ("dataset=moons", "dataset.name", "moons"),
        ("dataset.n_samples=50", "dataset.n_samples", 50),
        ("dataset.noise=0.1", "dataset.noise", 0.1),
        ("model.hidden=[4,4,4]", "model.hidden", [4, 4, 4]),
        ("model.init=he", "model.init", "he"),
        ("optimizer=adam", "optimizer.name", "adam"),
        ("optimizer.lr=0.1", "optimizer.lr", 0.1),
        ("optimizer.batch_size=16", "optimizer.batch_size", 16),
        ("tracking.uri=http://127.0.0.1:5000", "tracking.uri", "http://127.0.0.1:5000"),
        ("tracking.experiment=mine", "tracking.experiment", "mine"),
        ("tracking.log_every=5", "tracking.log_every", 5),
        ("tracking=none", "tracking.enabled", False),
        ("threads=2", "threads", 2),
        ("rng=legacy", "rng", "legacy"),
    ],
)
def test_interface_keys(override: str, key: str, value) -> None:
    plain = flatten(OmegaConf.to_container(make([override]), enum_to_str=True))
    got = {k: v for k, v in plain.items() if k == key or k.startswith(f"{key}.")}
    if isinstance(value, list):
        assert [got[f"{key}.{i}"] for i in range(len(value))] == value
    else:
        assert got[key] == value


def test_deep_model_has_depth_and_width() -> None:
    built = build(make(["model=deep", "model.depth=3", "model.width=8", *SHRINK]))
    assert built.net.sizes == [2, 8, 8, 8, 1]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("activation=swish", "Invalid value 'swish', expected one of [sigmoid, tanh, relu"),
        ("model.init=glorot", "Invalid value 'glorot'"),
        ("optimizer.lr=fast", "could not be converted to Float"),
        ("model.hiden=[3]", "Could not override 'model.hiden'"),
        ("model=deep model.hidden=[3]", "Could not override 'model.hidden'"),
        ("optimizer=gd optimizer.beta1=0.5", "Could not override 'optimizer.beta1'"),
        ("dataset=unknown", "Could not find 'dataset/unknown'"),
    ],
)
def test_composition_errors_are_hydras_own(override: str, message: str) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        make(override.split())
    text = str(info.value) + str(info.value.__cause__)
    assert message in text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # The engine's own checks, said in config keys.
        ("optimizer.lr=-1",
         "optimizer.lr=-1.0: learning rate must be a positive number; got lr=-1.0"),
        ("optimizer.lr=0", "optimizer.lr=0.0: learning rate must be a positive number"),
        ("optimizer=momentum optimizer.momentum=1.0",
         "optimizer.momentum=1.0: momentum must be in [0, 1); got 1.0"),
        ("model.hidden=[0]",
         "model.hidden=[0]: every layer width must be at least 1; got [2, 0, 1]"),
        ("model=deep model.width=0", "model.width=0: every layer width must be at least 1"),
        ("dataset.name=mnist2",
         "dataset.name=mnist2: unknown data set 'mnist2'; valid choices: spiral, moons"),
        ("dataset.val_fraction=1.5",
         "dataset.val_fraction=1.5: val_fraction must be in [0, 1); got 1.5"),
        ("dataset.noise=-1", "dataset.noise=-1.0: noise must be >= 0"),
        ("optimizer.batch_size=0",
         "optimizer.batch_size=0: batch_size must be a positive integer or None"),
        ("epochs=-1", "epochs=-1: epochs must be an integer >= 0; got -1"),
        ("histogram_every=-2", "histogram_every=-2: histogram_every must be >= 0"),
        ("model.init=gaussian model.sigma_w2=-1",
         "model.sigma_w2=-1.0: sigma_w2 must be a finite number > 0; got sigma_w2=-1.0"),
        ("model.init=orthogonal model.sigma_w2=nan",
         "model.sigma_w2=nan: sigma_w2 must be a finite number > 0"),
        ("model.sigma_b2=-0.5", "model.sigma_b2=-0.5: sigma_b2 must be a finite number >= 0"),
        ("model.init=he model.sigma_w2=1.5",
         "model.sigma_w2=1.5: sigma_w2=1.5: only gaussian and orthogonal take it; he has its own"),
        # What only the harness knows.
        ("model=deep model.depth=0", "model.depth=0: must be an integer from 1 to 10000"),
        ("tracking.log_every=0", "tracking.log_every=0: must be a positive integer"),
        ("threads=0", "threads=0: must be a positive integer"),
    ],
)
def test_bad_values_are_named_by_their_config_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(make(override.split()))


def test_values_the_engine_accepts_are_accepted() -> None:
    """No second set of rules in the harness: what the engine takes, a config may ask for."""
    built = build(make(["epochs=0", "dataset.val_fraction=0", "optimizer.weight_decay=0"]))
    assert built.dataset.n_val == 0


def test_register_configs_is_idempotent_and_experiments_live_outside_conf() -> None:
    register_configs()
    register_configs()
    assert not (CONF_DIR / "experiment").exists() and EXPERIMENTS_DIR.parent == CONF_DIR.parent
    assert Path(CONF_DIR / "config.yaml").exists()
