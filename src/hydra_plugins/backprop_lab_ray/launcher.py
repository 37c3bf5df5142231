"""The Hydra launcher of conf/hydra/launcher/ray.yaml and ray_cluster.yaml.

Hydra instantiates launchers only from the ``hydra_plugins`` package and imports every module
here at start-up, so this one stays tiny and imports nothing heavy: the work (and Ray) is in
:func:`backprop_lab.harness.ray_launcher.launch`, imported when a sweep launches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class BackpropLabRayLauncher(Launcher):
    """hydra-ray-launcher's launcher, plus what backprop-lab needs: see
    backprop_lab.harness.ray_launcher."""

    def __init__(self, ray: DictConfig, **_: Any) -> None:
        self.ray_cfg = ray
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        from backprop_lab.harness.ray_launcher import launch

        return launch(self, job_overrides, initial_job_idx)
