"""What a job knows about itself: its folder, its overrides, its name, its sweep.

The launching process (hydra_callbacks.TrackingCallback) passes the sweep's facts to every job
through environment variables, which both Hydra's basic launcher (same process) and the joblib
launcher (worker processes started after on_multirun_start) see.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig

from backprop_lab.tracking.secrets import mask

ENV_SWEEP_ID = "BACKPROP_LAB_SWEEP_ID"
ENV_PARENT_RUN_ID = "BACKPROP_LAB_PARENT_RUN_ID"
ENV_SWEPT_KEYS = "BACKPROP_LAB_SWEPT_KEYS"
#: The pid of the process that runs Hydra's callbacks (jobs elsewhere are in worker processes).
ENV_LAUNCHER_PID = "BACKPROP_LAB_LAUNCHER_PID"

GROUPS = ("dataset", "model", "optimizer", "tracking", "experiment")
# Keys that say how a run is recorded or shown, not what it trains: left out of run names.
NOT_IN_NAMES = ("hydra", "tracking", "progress", "figures", "threads", "experiment", "resume")


def split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~").strip(), value.strip()


def _short(key: str, value: str) -> str:
    value = value.replace(" ", "").strip("'\"")
    if key == "activation" or key in GROUPS:
        return value
    last = key.rsplit(".", 1)[-1]
    try:
        number = float(value)
    except ValueError:
        return f"{last}={value}"
    if len(value) > 10:  # a value a search sampled, e.g. 0.012345678901234
        value = f"{number:.4g}"
    if last[-1].isdigit():  # sigma_w2=1.76, not sigma_w21.76
        return f"{last}={value}"
    return f"{last}{value}"  # depth10, seed1, lr0.1


def run_name(overrides: list[str], keys: list[str] | None = None, fallback: str = "run") -> str:
    """A run name that says what differs, e.g. ``tanh-depth10-seed1``.

    ``keys``: the swept keys, in sweep order (None: every override that changes training).
    """
    pairs = dict(split_override(o) for o in overrides)
    if keys is None:
        keys = [k for k in pairs if k.split(".")[0] not in NOT_IN_NAMES]
    parts = [_short(k, pairs[k]) for k in keys if k in pairs]
    return mask("-".join(parts)) or fallback


#: The sweep's time stamp in its parent's name: month-day hour:minute, local time.
STAMP_FORMAT = "%m-%d %H:%M"


def sweep_name(experiment: str | None, overrides: list[str], swept: list[str],
               started: datetime) -> str:
    """The parent run's name: the experiment (if any), then the command's overrides that change
    training, fixed ones first (they tell two sweeps of the same values apart), then a short
    time stamp, e.g. ``vanishing_gradients 12-07 14:03``,
    ``model=deep model.depth=10 activation=sigmoid,tanh,relu 12-07 14:03``.

    ``overrides``: the command line's task overrides, as typed (``experiment=`` and keys that
    only say how a run is recorded or shown, :data:`NOT_IN_NAMES`, are left out); ``swept``:
    the keys that take several values.
    """
    kept = [o.strip() for o in overrides
            if split_override(o)[0].split(".")[0] not in (*NOT_IN_NAMES, "experiment")]
    varied = [o for o in kept if split_override(o)[0] in swept]
    fixed = [o for o in kept if o not in varied]
    parts = [p for p in (experiment, " ".join([*fixed, *varied])) if p]
    return mask(" ".join([*(parts or ["sweep"]), started.strftime(STAMP_FORMAT)]))


@dataclass
class JobContext:
    output_dir: Path
    base_dir: Path  # where the command was started (relative paths resolve against it)
    multirun: bool = False
    job_num: int = 0
    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    run_name: str = "run"
    sweep_id: str | None = None
    parent_run_id: str | None = None
    show_progress: bool = True

    @property
    def in_launching_process(self) -> bool:
        """True unless the job runs in a worker process (joblib, Ray)."""
        return os.environ.get(ENV_LAUNCHER_PID, str(os.getpid())) == str(os.getpid())

    @classmethod
    def current(cls, cfg: DictConfig) -> JobContext:
        """The context of the running Hydra job (or of a plain call outside Hydra)."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        fallback = f"{cfg.activation.name}-{cfg.dataset.name}"
        if not HydraConfig.initialized():
            return cls(output_dir=Path.cwd(), base_dir=Path.cwd(), run_name=fallback)
        hc = HydraConfig.get()
        overrides = list(hc.overrides.task)
        choices = {k: str(v) for k, v in hc.runtime.choices.items()
                   if k in GROUPS and v is not None}
        multirun = hc.mode == RunMode.MULTIRUN
        keys = None
        if multirun and os.environ.get(ENV_SWEPT_KEYS):
            keys = json.loads(os.environ[ENV_SWEPT_KEYS])
        if "experiment" in choices:
            fallback = choices["experiment"]
        name = run_name(overrides, keys, fallback)
        if keys is None and "experiment" in choices and name != fallback:
            name = f"{choices['experiment']}-{name}"
        launcher = str(hc.launcher.get("_target_", ""))
        return cls(
            output_dir=Path(hc.runtime.output_dir),
            base_dir=Path(hc.runtime.cwd),
            multirun=multirun,
            job_num=int(hc.job.get("num", 0) or 0),
            overrides=overrides,
            choices=choices,
            run_name=name,
            sweep_id=os.environ.get(ENV_SWEEP_ID) if multirun else None,
            parent_run_id=os.environ.get(ENV_PARENT_RUN_ID) if multirun else None,
            # Bars of parallel workers would overwrite each other: summaries only.
            show_progress=not multirun or launcher.endswith("BasicLauncher"),
        )
