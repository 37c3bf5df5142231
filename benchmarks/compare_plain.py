"""The plain network's time per epoch, this checkout against another version of the code, side by
side: did a change make the plain path slower?

    git archive main src | tar -x -C /tmp/before
    python benchmarks/compare_plain.py /tmp/before/src [--rounds 10]

Each round runs one subprocess per version (order alternating, ABBA), each timing ``train()``
on the notebook network (2-16-8-1 tanh, 400 samples, 1000 epochs) and the deep one (2 -> 10 x
64 tanh -> 1, 2000 samples, 40 epochs), diagnostics on and off, in thread CPU time with one
BLAS thread. Prints a markdown table of medians and after/before ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEASURE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from threadpoolctl import threadpool_limits
from backprop_lab.engine.datasets import load_dataset
from backprop_lab.engine.network import MLP
from backprop_lab.engine.optimizers import make_optimizer
from backprop_lab.engine.training import train
out = {}
with threadpool_limits(1):
    for key, n, hidden, lr, epochs in (("notebook", 200, (16, 8), 0.5, 1000),
                                       ("deep", 1000, (64,) * 10, 0.1, 40)):
        ds = load_dataset("spiral", n_samples=n, noise=0.3, val_fraction=0.0,
                          rng=np.random.default_rng(0))
        for diag in (True, False):
            net = MLP([2, *hidden, 1], "tanh", "sigmoid_bce", rng=np.random.default_rng(1))
            start = time.thread_time()
            train(net, ds, make_optimizer("gd", lr=lr), epochs=epochs, diagnostics=diag)
            out[f"{key}, diagnostics {'on' if diag else 'off'}"] = (
                (time.thread_time() - start) / epochs)
print(json.dumps(out))
"""


def measure(src: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(src), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", MEASURE, str(src)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the other version's src/ folder")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    versions = {"before": args.before.resolve(), "after": ROOT / "src"}
    times: dict[str, dict[str, list[float]]] = {}
    for r in range(args.rounds):
        for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
            for case, seconds in measure(versions[name]).items():
                times.setdefault(case, {"before": [], "after": []})[name].append(seconds)
    print("| workload | before | after | after/before | rounds |")
    print("|---|---:|---:|---:|---:|")
    for case, t in times.items():
        before, after = statistics.median(t["before"]), statistics.median(t["after"])
        print(f"| {case} | {before * 1e3:.3f} ms | {after * 1e3:.3f} ms | "
              f"{after / before:.3f} | {args.rounds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
