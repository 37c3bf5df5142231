"""What the default log10 companions cost the flagship: whole commands, side by side.

    python benchmarks/log10_companions.py                     # 9 interleaved repeats
    python benchmarks/log10_companions.py --repeats 15 --baseline /path/to/an/older/checkout

Variants of ``python train.py -m activation=sigmoid,tanh,relu`` (each into a fresh SQLite
store), interleaved (A B C, C B A, ...), medians: ``tracking=none``; tracked with the default
companions (``tracking.log10``: grad_weight_ratio, delta_std, grad_norm); tracked with only
grad_weight_ratio's; and, with ``--baseline DIR``, the same command from another checkout (its
own code and defaults). Wall time, and the CPU time of the command (user + system, the writer
thread included): on a machine other people load, wall times spread widely while CPU times
stay comparable, so both are printed. One BLAS thread per job.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_tracking import FLAGSHIP, ONE_LOG10, TRAIN  # noqa: E402
from benchmarks.common import interleaved, median, subprocess_env  # noqa: E402


def timed(root: Path, args: list[str], count: list[int], train: str = TRAIN,
          env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``train.py`` command in its own folders."""
    count[0] += 1
    folder = root / f"c{count[0]}"
    extra = [f"hydra.sweep.dir={folder / 'sweep'}"]
    if "tracking=none" not in args:
        extra.append(f"tracking.uri=sqlite:///{folder / 'mlflow.db'}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    done = subprocess.run([sys.executable, train, *args, *extra], cwd=root,
                          env={**subprocess_env(1), **(env or {})}, capture_output=True,
                          text=True, timeout=3600)
    wall = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    shutil.rmtree(folder, ignore_errors=True)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout of the project to time beside this one")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="backprop-bench-log10-"))
    count = [0]
    variants = {
        "none": lambda: timed(root, [*FLAGSHIP, "tracking=none"], count),
        "default": lambda: timed(root, [*FLAGSHIP], count),
        "one_log10": lambda: timed(root, [*FLAGSHIP, ONE_LOG10], count),
    }
    if args.baseline is not None:
        base = args.baseline.resolve()
        variants["baseline"] = lambda: timed(
            root, [*FLAGSHIP], count, str(base / "train.py"),
            {"PYTHONPATH": str(base / "src"), "BACKPROP_LAB_ROOT": str(base)})
    try:
        times = interleaved(variants, args.repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out: dict = {"repeats": args.repeats, "load_average_at_end": os.getloadavg()}
    for i, what in enumerate(("wall", "cpu")):
        med = {k: median([t[i] for t in v]) for k, v in times.items()}
        out[what] = {"median_s": med, **{f"{k} / none": med[k] / med["none"]
                                         for k in med if k != "none"},
                     "all_s": {k: [round(t[i], 3) for t in v] for k, v in times.items()}}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
