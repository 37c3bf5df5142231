"""The layout's promises: the engine stands alone (no Hydra, no MLflow), the contract module
imports nothing heavy, and the engine's entry points are importable from the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def modules_after(statement: str) -> set[str]:
    """Top-level names in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"{statement}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", [
    "backprop_lab.engine.activations", "backprop_lab.engine.losses",
    "backprop_lab.engine.initializers", "backprop_lab.engine.network",
    "backprop_lab.engine.optimizers", "backprop_lab.engine.datasets",
    "backprop_lab.engine.diagnostics", "backprop_lab.engine.history",
    "backprop_lab.engine.training", "backprop_lab.engine.theory",
])
def test_the_engine_imports_neither_hydra_nor_mlflow(module: str) -> None:
    loaded = modules_after(f"import {module}")
    assert module.split(".")[0] in loaded  # the check sees what was imported
    assert not loaded & {"hydra", "omegaconf", "mlflow", "sqlalchemy", "pandas", "matplotlib"}


def test_the_contract_imports_nothing_heavy() -> None:
    loaded = modules_after("import backprop_lab.contract")
    assert not loaded & {"numpy", "hydra", "omegaconf", "mlflow", "pandas"}


def test_the_engine_entry_points_are_importable_from_the_package() -> None:
    import backprop_lab
    from backprop_lab.engine.datasets import load_dataset
    from backprop_lab.engine.network import MLP
    from backprop_lab.engine.optimizers import make_optimizer
    from backprop_lab.engine.training import train

    assert (backprop_lab.MLP, backprop_lab.train, backprop_lab.load_dataset,
            backprop_lab.make_optimizer) == (MLP, train, load_dataset, make_optimizer)


@pytest.mark.parametrize("module", ["backprop_lab.contract", "backprop_lab.analysis.loading",
                                    "backprop_lab.tracking.store", "backprop_lab.harness.app"])
def test_telemetry_is_off_as_soon_as_any_module_of_the_package_is_imported(module: str) -> None:
    """One ``telemetry_off()``, where the package starts: before anything of it imports mlflow,
    in this process and (by inheritance) in what it starts; an explicit opt-in is kept."""
    from backprop_lab.contract import TELEMETRY_OFF

    env = {k: v for k, v in os.environ.items() if k not in TELEMETRY_OFF}
    env[next(iter(TELEMETRY_OFF))] = "opted-in"
    code = (f"import {module}, os, json; "
            f"print(json.dumps({{k: os.environ.get(k) for k in {sorted(TELEMETRY_OFF)!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    seen = json.loads(out)
    first, *rest = TELEMETRY_OFF
    assert seen[first] == "opted-in"
    assert {k: seen[k] for k in rest} == {k: TELEMETRY_OFF[k] for k in rest}
