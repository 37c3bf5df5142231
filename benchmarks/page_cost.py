"""What the gradient-flow page adds to the flagship sweep, measured side by side.

    python benchmarks/page_cost.py --before /path/to/checkout-of-an-older-commit [--repeats 5]

Runs ``python train.py -m activation=sigmoid,tanh,relu progress=false`` (one BLAS thread) from
this tree ("after") and from ``--before`` (a checkout of another commit, run with its own
``src/`` first on PYTHONPATH and the same interpreter), each tracked into a fresh SQLite store
and with ``tracking=none``, the four commands interleaved, ``--repeats`` rounds; prints the
medians of their wall times and the ratios tracked / ``tracking=none``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
FLAGSHIP = ["-m", "activation=sigmoid,tanh,relu", "progress=false"]


def once(tree: Path, tracked: bool, tmp: Path, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OPENBLAS_NUM_THREADS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    args = [*FLAGSHIP, f"hydra.sweep.dir={tmp / f'sweep{n}'}"]
    args.append(f"tracking.uri=sqlite:///{tmp / f'store{n}.db'}" if tracked
                else "tracking=none")
    tic = time.perf_counter()
    done = subprocess.run([sys.executable, str(tree / "train.py"), *args], env=env,
                          capture_output=True, text=True, cwd=tmp)
    seconds = time.perf_counter() - tic
    if done.returncode != 0:
        raise RuntimeError(f"{tree} {args}: {done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": HERE}
    times: dict[tuple[str, bool], list[float]] = {(t, k): [] for t in trees for k in (1, 0)}
    with tempfile.TemporaryDirectory() as folder:
        tmp, n = Path(folder), 0
        for _ in range(args.repeats):
            for (name, tracked) in times:
                n += 1
                times[(name, tracked)].append(once(trees[name], bool(tracked), tmp, n))
    print(f"flagship `python train.py {' '.join(FLAGSHIP)}`, medians of {args.repeats} "
          "interleaved repeats:")
    for name in trees:
        on = statistics.median(times[(name, 1)])
        off = statistics.median(times[(name, 0)])
        print(f"  {name}: tracked {on:.2f} s, tracking=none {off:.2f} s, ratio {on / off:.2f}"
              f"  (tracked {', '.join(f'{s:.2f}' for s in times[(name, 1)])}; none "
              f"{', '.join(f'{s:.2f}' for s in times[(name, 0)])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
