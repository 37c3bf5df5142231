"""Scale-out, for real: the same 8-job sweep through the basic, joblib and local Ray launchers
into a fresh SQLite store each, and through a Ray cluster started with ``ray start``, all on
127.0.0.1, read back with MLflow's client.

Every sweep must leave one parent run and 8 FINISHED children, every metric's full history
(equal to the job's history.csv artifact, which must download), and one experiment: a store
that did not exist is created once, not raced by 8 writers. The wall time of each launcher is
printed at the end of the module (measured in this one run; the machine is shared, so compare
them with each other only).

Run with ``pytest -m integration`` (needs the cluster extra: pip install -e '.[cluster]').
"""

from __future__ import annotations

import ipaddress
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from backprop_lab.engine.history import log10_companions

pytestmark = pytest.mark.integration

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = REPO_ROOT / "train.py"
EPOCHS = 60  # 61 rows x 31 metrics a job, each a block written while the others write
N_JOBS = 8
# 4 activations x 2 seeds; small network, so process start-up and logging dominate.
SWEEP = ["activation=sigmoid,tanh,relu,leaky_relu", "seed=0,1", f"epochs={EPOCHS}",
         "figures=false", "histogram_every=30", "progress=false"]
# Each launcher runs all 8 jobs at once (8 concurrent writers on this 2-core machine).
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={N_JOBS}"],
    "ray": ["hydra/launcher=ray", f"hydra.launcher.ray.init.num_cpus={N_JOBS}"],
}
WALL_TIMES: dict[str, float] = {}


def private_env(**extra: str) -> dict[str, str]:
    """The environment of every process a test starts: nothing reported to outside hosts."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true",
               RAY_USAGE_STATS_ENABLED="0", HYDRA_FULL_ERROR="0")
    env.update(extra)
    return env


def run_train(*args: str, cwd: Path, timeout: float = 480,
              watch=None, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """``python train.py ARGS`` from ``cwd``; (result, wall seconds). ``watch(popen)`` runs in
    a thread while the command runs."""
    tic = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(TRAIN), *args], cwd=cwd,
                            env=private_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watcher = None
    if watch is not None:
        watcher = threading.Thread(target=watch, args=(proc,), daemon=True)
        watcher.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"train.py {' '.join(args)} did not end within {timeout} s\n{out}\n{err}")
    seconds = time.perf_counter() - tic
    if watcher is not None:
        watcher.join(timeout=5)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), seconds


def non_loopback_listeners(pids: set[int]) -> list[str]:
    """Listening TCP sockets of ``pids`` bound to anything but 127.0.0.1 / ::1."""
    import psutil

    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.pid in pids and conn.status == psutil.CONN_LISTEN:
            ip = ipaddress.ip_address(conn.laddr.ip.split("%")[0])
            mapped = getattr(ip, "ipv4_mapped", None)
            if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
                found.append(f"pid {conn.pid} {conn.laddr.ip}:{conn.laddr.port}")
    return found


def process_tree(pid: int) -> set[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return {pid} | {p.pid for p in root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


class LoopbackWatcher:
    """Polls the listening sockets of a command's process tree while it runs."""

    def __init__(self) -> None:
        self.bad: set[str] = set()
        self.polls = 0

    def __call__(self, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            try:
                self.bad.update(non_loopback_listeners(process_tree(proc.pid)))
                self.polls += 1
            except Exception:  # a process ended while being read
                pass
            time.sleep(0.5)


def check_sweep(uri: str, n_jobs: int, epochs: int, download_dir: Path,
                experiment: str = "backprop-lab") -> dict:
    """Assert one parent, ``n_jobs`` FINISHED children with every metric's full history and
    downloadable artifacts; return {run name: run} of the children."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e for e in client.search_experiments() if e.name == experiment]
    assert len(experiments) == 1, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiments[0].experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("backprop_lab.role") == "sweep"]
    assert len(parents) == 1, [(r.info.run_name, r.data.tags.get("backprop_lab.role"))
                               for r in runs]
    parent = parents[0]
    assert parent.info.status == "FINISHED", parent.data.tags
    children = [r for r in runs if r.data.tags.get("backprop_lab.role") == "job"]
    assert len(children) == n_jobs == len(runs) - 1
    by_name = {}
    for run in children:
        name = run.info.run_name
        assert run.data.tags.get("mlflow.parentRunId") == parent.info.run_id, name
        assert run.info.status == "FINISHED", (name, run.data.tags)
        assert run.data.tags.get("backprop_lab.outcome") == "finished", name
        by_name[name] = run
    assert len(by_name) == n_jobs, sorted(by_name)  # every job its own run

    for name, run in by_name.items():
        run_id = run.info.run_id
        top = {a.path for a in client.list_artifacts(run_id)}
        assert {"config.yaml", "history.csv", "weights.npz", "hydra"} <= top, (name, top)
        local = client.download_artifacts(run_id, "history.csv", str(download_dir))
        frame = pd.read_csv(local, index_col="epoch")
        assert list(frame.index) == list(range(epochs + 1)), name
        assert len(frame.columns) >= 4 + 9 * 3  # train/val loss+acc, 9 diagnostics x 3 layers
        names = list(frame.columns)  # MLflow also has the log10 companions
        companions = log10_companions(names, np.zeros((len(names), 1)))[0]
        summary = {k for k in run.data.metrics if k.startswith("vanishing/")}  # run's end
        assert summary and companions, name
        assert set(run.data.metrics) - summary == set(names) | set(companions), name
        for key in frame.columns:
            history = client.get_metric_history(run_id, key)
            steps = [m.step for m in history]
            assert sorted(steps) == list(range(epochs + 1)), (name, key, len(steps))
            logged = np.array([m.value for m in sorted(history, key=lambda m: m.step)])
            expected = frame[key].to_numpy()
            same = np.isclose(logged, expected, rtol=1e-7, atol=1e-12) | (
                np.isnan(logged) & np.isnan(expected))
            assert same.all(), (name, key)
        final = run.data.metrics["train/loss"]
        assert math.isfinite(final)
    return by_name


@pytest.fixture(scope="module", autouse=True)
def report_wall_times(request):
    yield
    if not WALL_TIMES:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"wall time of the same {N_JOBS}-job sweep ({EPOCHS} epochs, {N_JOBS} jobs at "
             f"once where parallel), measured in this run on {os.cpu_count()} cores:"]
    lines += [f"  {name:<12} {seconds:6.1f} s" for name, seconds in WALL_TIMES.items()]
    text = "\n".join(lines)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("\n" + text)


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_sweep_into_new_sqlite_store(launcher, tmp_path):
    """8 jobs through one launcher into a SQLite file that does not exist yet."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    watcher = LoopbackWatcher() if launcher == "ray" else None
    result, seconds = run_train(
        "-m", *SWEEP, *LAUNCHERS[launcher], f"tracking.uri={uri}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, watch=watcher)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    WALL_TIMES[launcher] = seconds
    check_sweep(uri, N_JOBS, EPOCHS, tmp_path / "downloads")
    # Artifacts beside the store, never ./mlruns of the working directory.
    assert (tmp_path / "store" / "mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    if watcher is not None:
        assert watcher.polls > 0
        assert not watcher.bad, f"Ray listened beyond 127.0.0.1: {sorted(watcher.bad)}"


# -- a Ray cluster given by address ------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head`` on 127.0.0.1 (its own session, ended by process group)."""
    from backprop_lab.tracking.server import free_port

    port = free_port()
    log = tmp_path_factory.mktemp("ray_head") / "ray_head.log"
    ray = Path(sys.executable).with_name("ray")
    env = private_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={port}", "--include-dashboard=false", f"--num-cpus={N_JOBS}",
             "--disable-usage-stats"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", proc
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


def test_sweep_on_ray_cluster_by_address(ray_head, tmp_path):
    """hydra/launcher=ray_cluster joins a running cluster; workers that did not inherit the
    driver's environment still file their runs under the sweep's parent, in the store the
    driver resolved (here: a relative SQLite path given by MLFLOW_TRACKING_URI) and write
    their outputs under the driver's relative sweep folder."""
    address, head = ray_head
    pids = process_tree(head.pid)
    assert len(pids) > 3 and not non_loopback_listeners(pids)
    result, seconds = run_train(
        "-m", *SWEEP, "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}",
        "hydra.sweep.dir=sweep", cwd=tmp_path, MLFLOW_TRACKING_URI="sqlite:///store/mlflow.db")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    WALL_TIMES["ray_cluster"] = seconds
    check_sweep(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", N_JOBS, EPOCHS,
                tmp_path / "downloads")
    assert len(list((tmp_path / "sweep").glob("*/summary.json"))) == N_JOBS
    assert not non_loopback_listeners(process_tree(head.pid))


# -- helpers of backprop_lab.harness.ray_launcher (no Ray needed) -------------------------------------------


def test_cluster_helpers():
    from omegaconf import OmegaConf

    from backprop_lab.harness import ray_launcher as cluster

    assert cluster.is_loopback(None) and cluster.is_loopback("127.0.0.1:6379")
    assert cluster.is_loopback("ray://localhost:10001") and cluster.is_loopback("[::1]:6379")
    assert not cluster.is_loopback("10.0.0.5:6379") and not cluster.is_loopback("auto")
    local = cluster.ray_init_kwargs({"address": None, "num_cpus": None,
                                     "object_store_memory": 5}, loopback=True)
    assert local == {"address": "local", "object_store_memory": 5,
                     "_node_ip_address": "127.0.0.1"}
    joining = cluster.ray_init_kwargs({"address": "h:1", "object_store_memory": 5,
                                       "num_cpus": 2}, loopback=False)
    assert joining == {"address": "h:1"}
    cfg = OmegaConf.create({"tracking": {"enabled": True, "uri": None},
                            "hydra": {"runtime": {"cwd": "/somewhere"}}})
    env = cluster.job_environment(cfg, {"BACKPROP_LAB_PARENT_RUN_ID": "abc", "HOME": "/root",
                                        "MLFLOW_TRACKING_TOKEN": "t"})
    assert env["BACKPROP_LAB_PARENT_RUN_ID"] == "abc" and env["MLFLOW_TRACKING_TOKEN"] == "t"
    assert "HOME" not in env and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["MLFLOW_TRACKING_URI"].startswith("sqlite:///")


def test_preflight_names_what_is_missing_within_seconds():
    """What the launching process can check before it creates anything (see cluster.preflight):
    the address of hydra/launcher=ray_cluster, that the cluster answers there, that an http(s)
    tracking server answers."""
    from hydra import compose, initialize_config_dir

    from backprop_lab.contract import CONF_DIR
    from backprop_lab.harness.config import register_configs
    from backprop_lab.harness.ray_launcher import PreflightError, preflight
    from backprop_lab.tracking.server import free_port

    register_configs()
    nobody = f"127.0.0.1:{free_port()}"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        def config(*overrides):
            return compose("config", overrides=list(overrides), return_hydra_config=True)

        with pytest.raises(PreflightError, match="needs the cluster's address"):
            preflight(config("hydra/launcher=ray_cluster"))
        tic = time.perf_counter()
        with pytest.raises(PreflightError, match=f"Ray cluster at {nobody} is not reachable"):
            preflight(config("hydra/launcher=ray_cluster",
                             f"hydra.launcher.ray.init.address={nobody}"))
        with pytest.raises(PreflightError, match=f"http://{nobody} is not reachable"):
            preflight(config("hydra/launcher=ray"), f"http://{nobody}")
        assert time.perf_counter() - tic < 20
        preflight(config("hydra/launcher=ray"), "sqlite:////tmp/nowhere/mlflow.db")
        preflight(config("hydra/launcher=joblib"), None)
