"""The Hydra sweeper of conf/hydra/sweeper/optuna.yaml.

Hydra imports every module here at start-up, so this one stays tiny and imports nothing heavy:
the search (and Optuna) is in :mod:`backprop_lab.harness.hpo`, imported when a sweep starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class BackpropLabOptunaSweeper(Sweeper):
    """Optuna on the project's jobs: see backprop_lab.harness.hpo."""

    def __init__(self, **_: Any) -> None:  # the settings are read from the composed config
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        import os

        from backprop_lab import tracking
        from backprop_lab.harness import hpo
        from backprop_lab.harness.job_context import ENV_PARENT_RUN_ID
        from backprop_lab.harness.sweep_configs import task_config

        assert self.config is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        rows = hpo.run_sweep(self.launcher, self.config, arguments)
        settings, _ = hpo.settings_and_space(self.config)
        cfg = task_config(self.config)
        cwd = self.config.hydra.runtime.cwd
        uri = tracking.resolve_tracking_uri(cfg.tracking.uri, cwd) if cfg.tracking.enabled \
            else None
        hpo.record_on_parent(rows, settings, sweep_dir, uri, os.environ.get(ENV_PARENT_RUN_ID),
                             hpo.storage_path(settings, uri, cwd))
        hpo.print_best(rows, settings)
        return rows
