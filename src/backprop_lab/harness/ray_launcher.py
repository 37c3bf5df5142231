"""Hydra launcher that runs a sweep's jobs on Ray, local or on a cluster, privately by default.

    python train.py -m activation=sigmoid,tanh hydra/launcher=ray          # local Ray instance
    python train.py -m activation=sigmoid,tanh hydra/launcher=ray_cluster \\
        hydra.launcher.ray.init.address=127.0.0.1:6379                      # an existing cluster

Configs: conf/hydra/launcher/ray.yaml and ray_cluster.yaml, whose ``_target_`` is the thin
plugin class in hydra_plugins/backprop_lab_ray (Hydra instantiates launchers only from the
``hydra_plugins`` package); the work is :func:`launch` here. It is the launcher of
``hydra-ray-launcher`` 1.2.2 (same ``ray.init`` / ``ray.remote`` keys, same job runner) plus
what a backprop-lab sweep needs and the plugin does not do:

- **Every job is a child of the sweep's parent run, wherever it runs.** The launching process
  (harness/callbacks.py) hands the parent run id, sweep id and swept keys to jobs
  through ``BACKPROP_LAB_*`` environment variables. Workers of a Ray instance started by the
  sweep inherit them, but workers of a cluster started by ``ray start`` do not: each job gets
  them (and ``MLFLOW_TRACKING_*``, and the tracking URI the launching process resolved) with its
  task, and sets them before it runs. Jobs also start in the launching process's working
  directory when it exists on their node, so relative paths mean the same thing.
- **Nothing leaves the machine unless asked.** Ray's usage stats are off
  (``RAY_USAGE_STATS_ENABLED=0``), MLflow's telemetry too, unless the environment opts in. A
  local instance, or a cluster address on 127.0.0.1, keeps every Ray port on 127.0.0.1: without
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` Ray 2.60 swaps 127.0.0.1 for the machine's address
  and listens on all interfaces (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` opts out).
- **Joining a cluster works as measured.** Keys left null (``object_store_memory``, which Ray
  rejects when connecting to an existing cluster, ``num_cpus``) are not passed to ``ray.init``;
  ``RAY_AUTH_MODE=token`` is set when joining if unset (Ray 2.60 clusters started with
  ``ray start`` require a token; the driver reads it from ``~/.ray/auth_token``).
- A local instance is always a new one (``address="local"``; without an address ``ray.init``
  joins whatever cluster ``ray start`` last recorded in /tmp/ray, even a stale one), and the
  Ray connection is closed when the sweep ends (a local instance is stopped).

:func:`preflight` is for the launching process, before it creates anything: it names a missing
cluster address, an unreachable cluster or tracking server within seconds.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf, open_dict

from backprop_lab.contract import TELEMETRY_OFF

log = logging.getLogger(__name__)

# Environment handed to every job (names, then prefixes).
FORWARDED_NAMES = ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK",
                   "HYDRA_FULL_ERROR", "BACKPROP_LAB_ROOT")
FORWARDED_PREFIXES = ("BACKPROP_LAB_", "MLFLOW_TRACKING_", "MLFLOW_HTTP_")
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def private_defaults(environ: os._Environ | dict = os.environ) -> None:
    """Set the telemetry/usage-stats switches off where the environment does not set them."""
    for key, value in TELEMETRY_OFF.items():
        environ.setdefault(key, value)


def is_local_address(address: str | None) -> bool:
    """True for "start a Ray instance here" (None, "", "local")."""
    return address in (None, "", "local")


def is_loopback(address: str | None) -> bool:
    """True if ``address`` (None/"local", or HOST:PORT / ray://HOST:PORT) is on this machine's
    loopback interface."""
    if is_local_address(address):
        return True
    host = str(address).split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prepare_driver(*, loopback: bool, joining: bool) -> None:
    """Environment of the launching process, before Ray is imported or initialised."""
    private_defaults()
    if loopback:
        os.environ[LOOPBACK_ENV] = "0"
        import sys

        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:  # ray was imported before: its constant is already read
            constants.ENABLE_RAY_CLUSTER = False
    if joining:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def job_environment(config: DictConfig, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables every job of the sweep gets (see the module docstring)."""
    env = {k: v for k, v in environ.items()
           if k in FORWARDED_NAMES or k.startswith(FORWARDED_PREFIXES)}
    for key in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        env.setdefault(key, TELEMETRY_OFF[key])
    tracking_on = OmegaConf.select(config, "tracking.enabled", default=False)
    if tracking_on and not OmegaConf.select(config, "tracking.uri", default=None):
        # The store the launching process resolved (a job on another node would otherwise
        # fall back to its own default).
        from backprop_lab.tracking import resolve_tracking_uri

        env.setdefault("MLFLOW_TRACKING_URI",
                       resolve_tracking_uri(None, config.hydra.runtime.cwd))
    return env


def ray_init_kwargs(init: DictConfig | Mapping | None, *, loopback: bool) -> dict[str, Any]:
    """``ray.init`` arguments: nulls dropped; a local instance on 127.0.0.1 when ``loopback``."""
    if isinstance(init, DictConfig):
        init = OmegaConf.to_container(init, resolve=True)
    kwargs = {k: v for k, v in dict(init or {}).items() if v is not None}
    if is_local_address(kwargs.get("address")):
        # "local": always a new instance (without an address, ray.init joins the cluster a
        # `ray start` on this machine recorded in /tmp/ray, even a stale one).
        kwargs["address"] = "local"
        if loopback:
            kwargs.setdefault("_node_ip_address", "127.0.0.1")
    else:  # joining: these describe a new instance, which Ray rejects when connecting
        for key in ("object_store_memory", "num_cpus", "num_gpus", "resources",
                    "include_dashboard", "dashboard_host", "dashboard_port"):
            kwargs.pop(key, None)
    return kwargs


class PreflightError(RuntimeError):
    """A sweep cannot start: its Ray cluster or tracking server is missing or unreachable."""


def _gcs_reachable(address: str, timeout: float) -> str | None:
    """None if a TCP connection to the cluster's HOST:PORT opens, else the reason."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                      timeout=timeout):
            return None
    except ValueError:
        return f"not HOST:PORT: {address!r}"
    except OSError as exc:
        return str(exc.strerror or exc)


def preflight(config: DictConfig, tracking_uri: str | None = None,
              timeout: float = 5.0) -> None:
    """Check, in the launching process before anything is created, what a sweep needs from
    outside: the Ray cluster of hydra/launcher=ray_cluster (address given, reachable, Ray
    installed) and the tracking server when the URI is http(s) (:func:`backprop_lab.tracking.server.
    check_tracking_server`: MLflow's own retries take about 4 minutes to give up).

    ``config``: the full Hydra config (with its ``hydra`` node); ``tracking_uri``: the resolved
    URI, if tracking is on. Raises :class:`PreflightError` with a message for the user.
    """
    launcher = OmegaConf.select(config, "hydra.launcher", default=None)
    target = str(OmegaConf.select(launcher, "_target_", default="") or "") if launcher else ""
    if target.endswith("BackpropLabRayLauncher"):
        init = OmegaConf.select(launcher, "ray.init", default=None)
        if init is not None and OmegaConf.is_missing(init, "address"):
            raise PreflightError(
                "hydra/launcher=ray_cluster needs the cluster's address: add "
                "hydra.launcher.ray.init.address=HOST:PORT (the port of `ray start --head "
                "--port`), or use hydra/launcher=ray for a Ray instance on this machine.")
        try:
            import importlib.util

            missing = importlib.util.find_spec("ray") is None
        except ValueError:
            missing = False
        if missing:
            raise PreflightError("hydra/launcher=ray needs Ray: pip install -e '.[cluster]'")
        address = OmegaConf.select(launcher, "ray.init.address", default=None)
        if not is_local_address(address) and address != "auto":
            reason = _gcs_reachable(str(address), timeout)
            if reason is not None:
                raise PreflightError(f"The Ray cluster at {address} is not reachable "
                                     f"({reason}). Start it (ray start --head --port ...) or "
                                     "fix hydra.launcher.ray.init.address.")
    if tracking_uri:
        from backprop_lab.tracking.server import ServerError, check_tracking_server

        try:
            check_tracking_server(tracking_uri, timeout=timeout)
        except ServerError as exc:
            raise PreflightError(str(exc)) from None


def sweep_job(hydra_context, sweep_config: DictConfig, task_function, singleton_state: dict,
              env: Mapping[str, str], cwd: str | None) -> JobReturn:
    """One job in a Ray worker: the sweep's environment and working directory, then the job.

    Workers are reused between jobs of a sweep: variables of a previous job are replaced.
    """
    # Private: the plugin's job runner (Hydra's run_job with the plugin's setup) has no public
    # name; reusing it keeps jobs on Ray exactly as hydra-ray-launcher runs them.
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    for key in [k for k in os.environ if k.startswith("BACKPROP_LAB_") and k not in env]:
        del os.environ[key]
    os.environ.update(env)
    if cwd and Path(cwd).is_dir():
        os.chdir(cwd)
    return _run_job(hydra_context, sweep_config, task_function, singleton_state)


def _gather(ray, refs: list) -> list[JobReturn]:
    """The jobs' results, in order. On a stop signal (SIGINT, SIGTERM, SIGHUP: the launching
    process only records it, harness/stopping.py) every job is cancelled: one running gets a
    KeyboardInterrupt and ends its run KILLED, one not started never starts. Results of
    cancelled jobs are left out (their summary.json files, when they have one, still count)."""
    from backprop_lab.harness import stopping

    cancelled = False
    waiting = list(refs)
    while waiting:
        if stopping.received() and not cancelled:
            for ref in waiting:
                ray.cancel(ref)
            cancelled = True
        _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=0.5)
    results = []
    for ref in refs:
        try:
            results.append(ray.get(ref))
        except Exception:
            if not cancelled:
                raise
    return results


def launch(launcher, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> Sequence[JobReturn]:
    """Run the sweep's jobs on Ray for ``launcher``, the plugin object Hydra made from
    conf/hydra/launcher/ray*.yaml (``ray_cfg``, ``config``, ``hydra_context``,
    ``task_function``; see hydra_plugins/backprop_lab_ray).

    ``ray_cfg.init``: ``ray.init`` arguments (``address: null`` starts a local instance; null
    values are not passed); ``ray_cfg.remote``: ``ray.remote`` options of every job.
    """
    from hydra.core.singleton import Singleton
    from hydra.core.utils import configure_log, filter_overrides, setup_globals

    config, hydra_context = launcher.config, launcher.hydra_context
    assert config is not None and hydra_context is not None
    assert launcher.task_function is not None
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    address = OmegaConf.select(launcher.ray_cfg, "init.address", default=None)
    joining = not is_local_address(address)
    loopback = is_loopback(address) and os.environ.get(LOOPBACK_ENV) != "1"
    prepare_driver(loopback=loopback, joining=joining)
    try:
        import ray
        from hydra_plugins.hydra_ray_launcher import _launcher_util  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"hydra/launcher=ray needs the cluster extra ({exc}): "
                          "pip install -e '.[cluster]'") from None

    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    where = f"the Ray cluster at {address}" if joining else "a local Ray instance"
    log.info(f"Ray launcher: {len(job_overrides)} jobs on {where}, sweep output dir: "
             f"{sweep_dir}")
    started_here = False
    if not ray.is_initialized():
        ray.init(**ray_init_kwargs(launcher.ray_cfg.get("init"), loopback=loopback))
        started_here = True
    # ray.init puts its own SIGTERM handler in place (it logs and exits): ours again, so a
    # signal stops the sweep the same way as with the other launchers.
    from backprop_lab.harness import stopping

    stopping.install(raising=False)
    remote_opts = OmegaConf.to_container(launcher.ray_cfg.get("remote") or {}, resolve=True)
    remote_opts = {k: v for k, v in remote_opts.items() if v is not None}
    job = ray.remote(**remote_opts)(sweep_job) if remote_opts else ray.remote(sweep_job)
    env = job_environment(config)
    cwd = str(config.hydra.runtime.cwd)
    try:
        refs = []
        for num, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
            with warnings.catch_warnings():  # Hydra's schema-matching notice, once is enough
                warnings.simplefilter("ignore", UserWarning)
                sweep_config = hydra_context.config_loader.load_sweep_config(config,
                                                                             list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"ray_job_{num}"
                sweep_config.hydra.job.num = num
            refs.append(job.remote(hydra_context, sweep_config, launcher.task_function,
                                   Singleton.get_state(), env, cwd))
        return _gather(ray, refs)
    finally:
        if started_here:
            ray.shutdown()
