"""Benchmark 6: peak resident memory of a deep, wide run against what backpropagation must hold.

Each variant runs in a fresh interpreter (benchmarks/memory_probe.py): the baseline is its peak
RSS (``resource.getrusage().ru_maxrss``) after the imports and the (small) data set, before the
network is built; then it builds the network and trains a few full-batch epochs. The reference
size is the parameters plus the activations a^1..a^L of every layer on the batch (what the
backward pass needs cached). Ratio = (peak - baseline) / (parameters + activations).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.common import MISS, Row, Table, at_most, fmt_bytes, has_module, subprocess_env

GOAL = 1.5
PROBE = Path(__file__).resolve().parent / "memory_probe.py"


# Linux keeps a process's ru_maxrss across exec, and a child forked from this (large) process
# starts with this process's peak: a small intermediate interpreter launches the probe, so the
# probe's ru_maxrss starts from that small process's peak instead (a few MiB).
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def probe(spec: dict, threads: int) -> dict:
    cmd = [sys.executable, "-c", LAUNCHER, sys.executable, str(PROBE), json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(threads),
                         timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False, threads: int = 1) -> Table:
    hidden = [256] * 3 if quick else [512] * 8
    n_per_class = 512 if quick else 2048
    epochs = 2
    table = Table(
        key="memory",
        title="6. Peak memory (deep, wide run)",
        what=(
            f"2 -> {len(hidden)} x {hidden[0]} tanh -> 1 on {2 * n_per_class} samples, full "
            f"batch, {epochs} epochs, float64, each variant in a fresh interpreter "
            "(`benchmarks/memory_probe.py`): baseline = its peak RSS (`ru_maxrss`) after the "
            "imports and the data set (~100 KiB), before the network is built. Ratio = "
            "(peak RSS - baseline RSS) / (parameter bytes + bytes of all layers' activations on "
            "the batch)."
        ),
        ratio_label="added/(params+acts)",
    )
    variants = [("ours, diag on", {"engine": "ours", "diagnostics": True}, True),
                ("ours, diag off", {"engine": "ours", "diagnostics": False}, True)]
    if has_module("torch"):
        variants.append(("torch (reference)", {"engine": "torch", "diagnostics": False}, False))
    else:
        table.notes.append("torch is not installed: its reference row is skipped.")
    missed = False
    for label, spec, has_goal in variants:
        spec = {**spec, "hidden": hidden, "n_per_class": n_per_class, "epochs": epochs,
                "threads": threads}
        r = probe(spec, threads)
        reference = r["param_bytes"] + r["act_bytes"]
        added = r["peak"] - r["baseline"]
        table.add(Row(
            case=label,
            ratio=added / reference,
            goal=at_most(GOAL) if has_goal else None,
            cells={
                "params": fmt_bytes(r["param_bytes"]),
                "activations": fmt_bytes(r["act_bytes"]),
                "baseline RSS": fmt_bytes(r["baseline"]),
                "peak RSS": fmt_bytes(r["peak"]),
                "added": fmt_bytes(added),
            },
            values={k: float(r[k]) for k in ("baseline", "peak", "param_bytes", "act_bytes")},
        ))
        missed |= table.rows[-1].status == MISS
        if label == "ours, diag on":
            table.notes.append(accounting(r, hidden))
    if missed:
        table.notes.append(
            "**Why the goal is missed.** Backpropagation must keep every layer's activations "
            "(and the parameters and their gradients), but only one layer's errors and "
            "derivatives at a time: a workspace holds the activations, two error buffers and "
            "one derivative buffer of the widest layer, and with "
            "diagnostics each layer is reduced inside backward. Above that, each update forms "
            "lr * g (plain numpy: a temporary the size of the parameters), and with diagnostics "
            "on the recorder keeps a copy of the weights at the start of each epoch (the "
            "update ratio needs W_before).")
    return table


def accounting(r: dict, hidden: list[int]) -> str:
    """Where our run's memory goes, from the engine's buffer layout."""
    params, acts, m = r["param_bytes"], r["act_bytes"], r["n_train"]
    layer = max(hidden) * m * 8  # one (widest layer, m) float64 buffer
    needed = 3 * params + acts + 3 * layer
    return (
        f"Accounting (ours): parameters {fmt_bytes(params)} + gradients {fmt_bytes(params)}; "
        f"activations {fmt_bytes(acts)}; two error and one derivative scratch buffers of the "
        f"widest layer {fmt_bytes(3 * layer)}; the update's temporary lr * g "
        f"{fmt_bytes(params)}: {fmt_bytes(needed)}, a ratio of "
        f"{needed / (params + acts):.2f}. With diagnostics, add the recorder's weight "
        f"snapshot ({fmt_bytes(params)}) and per-unit sums."
    )
