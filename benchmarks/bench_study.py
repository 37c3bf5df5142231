"""Benchmark 8: a study's efficiency, the sum of its runs' training time over its wall time.

``python train.py -m experiment=vanishing_gradients`` (36 runs: 3 activations x 4 depths x 3
seeds, every metric every epoch, tracked into a fresh SQLite store), once with the basic
launcher (one job after another) and once with ``hydra/launcher=joblib
hydra.launcher.n_jobs=2``, interleaved. Each job writes where its time went into its
summary.json (``seconds_setup``: building the network and data, creating the MLflow run and the
job's record; ``seconds_training``: ``train()``, its callbacks included (the MLflow writes of
the metrics every few epochs; ``seconds_metric_logging`` sums them with the final flush);
``seconds_outputs``: the run's ending, final flush and artifacts); what the jobs' ``seconds``
do not cover is the command's own: interpreter
start-up, Hydra's composition of every job, the sweep's parent run and its table.

efficiency = sum of the runs' training time / the command's wall time. A user waits for the
whole study: at 1.0 they would wait for training alone. With two workers efficiency can reach
2.0 (two runs training at once); the speed-up is the basic command's wall time over joblib's.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.bench_multirun import launch, read_back
from benchmarks.common import (
    REPO_ROOT,
    Row,
    Table,
    at_least,
    fmt_ratio,
    fmt_time,
    has_module,
    load_average,
    median,
)

EFFICIENCY_GOAL = 0.8
SPEEDUP_GOAL = 1.8
STUDY = ["experiment=vanishing_gradients", "progress=false"]
# --quick: the same study's grid cut to 4 runs of 20 epochs (checks the benchmark runs).
QUICK = ["activation=tanh,relu", "model.depth=2,5", "seed=0", "epochs=20"]
LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def summaries(sweep_dir: Path) -> list[dict]:
    """The jobs' summary.json files under a sweep folder."""
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob("summary.json"))]


def measure_once(tmp: Path, uri: str, name: str, r: int, overrides: list[str],
                 threads: int) -> dict:
    experiment = f"bench-study-{name}-{r}"
    wall, cpu = launch(tmp, uri, experiment, LAUNCHERS[name], threads, overrides)
    jobs = summaries(tmp / experiment)
    good, found, problems = read_back(uri, experiment)

    def total(key: str) -> float:
        return sum(float(j.get(key) or 0.0) for j in jobs)

    return {
        "wall": wall, "cpu": cpu, "n": len(jobs), "good": good, "found": found,
        "problems": problems, "training": total("seconds_training"),
        "setup": total("seconds_setup"), "outputs": total("seconds_outputs"),
        "job": total("seconds"), "logging": total("seconds_metric_logging"),
        "setup_med": statistics.median([float(j.get("seconds_setup") or 0) for j in jobs]
                                       or [float("nan")]),
        "outputs_med": statistics.median([float(j.get("seconds_outputs") or 0) for j in jobs]
                                         or [float("nan")]),
        "training_med": statistics.median([float(j.get("seconds_training") or 0)
                                           for j in jobs] or [float("nan")]),
        "load": load_average(),
    }


def run(quick: bool = False, threads: int = 1, repeats: int | None = None) -> Table:
    overrides = STUDY + (QUICK if quick else [])
    table = Table(
        key="study",
        title="8. Study efficiency (training time / wall time)",
        what=(
            f"`python train.py -m {' '.join(overrides)}` tracked into a fresh SQLite store, "
            "with the basic launcher and with `hydra/launcher=joblib hydra.launcher.n_jobs=2`, "
            f"{threads} BLAS thread(s) a job, interleaved. Ratio = sum of the runs' training "
            "time (`train()`, from each job's summary.json) / wall time of the whole command "
            "(the efficiency; joblib's row: speed-up = basic wall / joblib wall). The `per job` "
            "columns say where the rest goes: set-up (network, data, MLflow run, the job's "
            "record), outputs (ending, logging, artifacts), and outside the jobs (interpreter "
            "start-up, Hydra's composition of each job, the sweep's parent run and table), "
            "per job."
        ),
        ratio_label="ratio",
    )
    missing = [m for m in ("hydra", "mlflow", "hydra_plugins.hydra_joblib_launcher")
               if not has_module(m)]
    if missing or not (REPO_ROOT / "train.py").exists():
        table.skipped = f"the harness is not available ({', '.join(missing) or 'train.py'})"
        return table
    from backprop_lab.tracking import ensure_experiment

    repeats = repeats if repeats is not None else 1
    tmp = Path(tempfile.mkdtemp(prefix="backprop-bench-study-"))
    results: dict[str, list[dict]] = {name: [] for name in LAUNCHERS}
    try:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        ensure_experiment(uri, "warm-up")  # create and migrate the store before timing
        for r in range(repeats):
            for name in LAUNCHERS if r % 2 == 0 else list(LAUNCHERS)[::-1]:
                results[name].append(measure_once(tmp, uri, name, r, overrides, threads))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return median([x[key] for x in results[name]])

    basic_wall = med("basic", "wall")
    for name in LAUNCHERS:
        res = results[name]
        n = res[0]["n"]
        wall, training = med(name, "wall"), med(name, "training")
        outside = med(name, "wall") - med(name, "job") if name == "basic" else float("nan")
        ok = all(x["good"] == x["n"] == x["found"] and x["n"] > 0 for x in res)
        for x in res:
            if x["problems"]:
                table.notes.append(f"{name}: {x['problems']}")
        cells = {
            "runs": str(n),
            "wall": fmt_time(wall),
            "sum of training": fmt_time(training),
            "per job: training": fmt_time(med(name, "training_med")),
            "per job: metric logging (in training and outputs)": fmt_time(
                med(name, "logging") / max(n, 1)),
            "per job: set-up": fmt_time(med(name, "setup_med")),
            "per job: outputs": fmt_time(med(name, "outputs_med")),
            "per job: outside the jobs": (fmt_time(outside / n) if name == "basic"
                                          else "(overlaps)"),
            "cores used": f"{med(name, 'cpu') / wall:.2f}",
            "recorded": ", ".join(f"{x['good']}/{x['n']}" for x in res),
            "load (1, 5, 15 min) after": res[-1]["load"],
        }
        values = {"wall_s": wall, "training_s": training,
                  "setup_s": med(name, "setup"), "outputs_s": med(name, "outputs"),
                  "jobs_s": med(name, "job"),
                  "logging_s": med(name, "logging"), "cpu_s": med(name, "cpu")}
        table.add(Row(case=f"vanishing_gradients, {name}: efficiency", ratio=training / wall,
                      goal=at_least(EFFICIENCY_GOAL) if name == "basic" else None,
                      cells=cells, values=values, ok=ok, label="efficiency"))
        if name == "joblib":
            table.add(Row(case="vanishing_gradients, joblib (2 workers): speed-up over basic",
                          ratio=basic_wall / wall, goal=at_least(SPEEDUP_GOAL),
                          cells={"runs": str(n), "wall": fmt_time(wall)},
                          values={"speedup": basic_wall / wall}, ok=ok, label="speed-up"))
    b = results["basic"]
    fixed = (med("basic", "wall") - med("basic", "training")) / b[0]["n"]
    times_training = fixed / max(med("basic", "training_med"), 1e-9)
    table.notes.insert(0, (
        f"{repeats} interleaved repeat(s), medians. Wall-clock times of whole commands on a "
        "shared machine (the load averages are in the table). Basic launcher: each job costs "
        f"{fmt_time(fixed)} beyond its training ({fmt_ratio(times_training)}x "
        "its median training time): "
        f"set-up {fmt_time(med('basic', 'setup') / b[0]['n'])}, outputs "
        f"{fmt_time(med('basic', 'outputs') / b[0]['n'])}, outside the jobs "
        f"{fmt_time((med('basic', 'wall') - med('basic', 'job')) / b[0]['n'])} (means per job)."))
    return table
