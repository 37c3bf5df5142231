"""Benchmark 9: time per epoch against width and depth, ours and PyTorch CPU.

Full-batch gradient descent on the spiral (2 inputs, 512 samples, sigmoid + BCE output), tanh
hidden layers, float64, one BLAS/torch thread:

- width: 2 hidden layers of w units, w = 16 ... 2048;
- depth: d hidden layers of 64 units, d = 2 ... 200.

Each point: ours (diagnostics on and off) and torch (benchmark 1's peer, same initial weights),
interleaved, medians of the time of whole ``train()`` calls / epochs; the epochs of a point are
chosen from a first run so that one measurement takes about a quarter of a second, and at
least 10 (a ``train()`` of e epochs makes e + 1 probe passes: with few epochs the last one,
a backward pass with diagnostics on and a forward pass without, would weigh on the ratio).

A full run (not ``--quick``) writes docs/performance.md and docs/figures/scaling.png: the page
quotes this run's numbers, never retyped ones.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt

import numpy as np

from benchmarks.common import (
    REPO_ROOT,
    TORCH_MISSING,
    Row,
    Sample,
    Table,
    Timer,
    clock_note,
    fmt_ratio,
    fmt_time,
    has_module,
    interleaved,
    load_average,
    medians,
    primary,
)
from benchmarks.workloads import DEEP, Workload, run_ours

WIDTHS = (16, 32, 64, 128, 256, 512, 1024, 2048)
DEPTHS = (2, 5, 10, 20, 50, 100, 200)
QUICK_WIDTHS = (16, 64)
QUICK_DEPTHS = (2, 5)
BASE = dataclasses.replace(DEEP, key="scaling", n_per_class=256, quick_n_per_class=16, lr=0.01)
PAGE = REPO_ROOT / "docs" / "performance.md"
FIGURE = REPO_ROOT / "docs" / "figures" / "scaling.png"


def workload(hidden: tuple[int, ...]) -> Workload:
    label = f"2 -> {len(hidden)} x {hidden[0]} tanh -> 1"
    return dataclasses.replace(BASE, hidden=hidden, label=label)


def point(wl: Workload, threads: int, quick: bool, repeats: int) -> dict[str, float]:
    """Time per epoch of ours (diagnostics on, off) and torch on one network."""
    from benchmarks.bench_torch import TorchPeer

    ds = wl.data(np.float64, quick)
    probe, _ = run_ours(wl, ds, np.float64, diagnostics=True, epochs=1)
    budget = 0.01 if quick else 0.25
    epochs = int(min(200, max(2 if quick else 10, budget / max(primary(probe, threads), 1e-6))))

    def ours(diagnostics: bool) -> Sample:
        sample, _ = run_ours(wl, ds, np.float64, diagnostics=diagnostics, epochs=epochs)
        return sample / epochs

    def peer() -> Sample:
        p = TorchPeer(wl, wl.net(ds, np.float64, seed=1), ds, np.float64)
        with Timer() as timer:
            p.train(epochs)
        return timer.sample / epochs

    times = interleaved({"on": lambda: ours(True), "off": lambda: ours(False), "torch": peer},
                        repeats, warmup=0)
    out = {k: primary(medians(v), threads) for k, v in times.items()}
    out["epochs"] = epochs
    return out


def figure(widths: dict[int, dict], depths: dict[int, dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex="col",
                             gridspec_kw={"height_ratios": [2, 1]})
    series = (("on", "ours, diagnostics on", "C0", "-"), ("off", "ours, diagnostics off", "C0",
              "--"), ("torch", "PyTorch CPU", "C3", "-"))
    for col, (data, xlabel) in enumerate(((widths, "width (2 hidden layers of w units)"),
                                          (depths, "depth (d hidden layers of 64 units)"))):
        xs = sorted(data)
        ax = axes[0, col]
        for key, label, color, style in series:
            ax.plot(xs, [data[x][key] * 1e3 for x in xs], style, color=color, marker="o",
                    label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("ms per epoch (CPU time)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax = axes[1, col]
        ax.plot(xs, [data[x]["on"] / data[x]["torch"] for x in xs], "-o", color="C0",
                label="ours (diag on) / torch")
        ax.plot(xs, [data[x]["off"] / data[x]["torch"] for x in xs], "--o", color="C0",
                label="ours (diag off) / torch")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ours / torch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs], fontsize=8)
    axes[0, 0].set_title("Time per epoch against width")
    axes[0, 1].set_title("Time per epoch against depth")
    fig.suptitle("Full-batch training, tanh, float64, 512 samples, one thread: "
                 "numpy engine against PyTorch CPU", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def crossings(table: Table) -> str:
    """Where ours (diagnostics on, and off) stops being ahead of torch, from this run's rows."""
    parts = []
    for axis in ("width", "depth"):
        rows = [r for r in table.rows if r.case.startswith(axis)]
        for key, name in (("on_s", "diagnostics on"), ("off_s", "diagnostics off")):
            behind = [r.case.split()[1] for r in rows if r.values[key] > r.values["torch_s"]]
            worst = max(rows, key=lambda r: r.values[key] / r.values["torch_s"])
            parts.append(
                f"along {axis}, ours with {name} is behind torch at "
                f"{', '.join(behind) or 'no point'}"
                f" (largest ratio {fmt_ratio(worst.values[key] / worst.values['torch_s'])} at "
                f"{worst.case})")
    return "; ".join(parts) + "."


def page(table: Table, loads: tuple[str, str]) -> str:
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "# Performance",
        "",
        "Where the engine stands against PyTorch CPU as the network grows. Written by "
        "`python benchmarks/run.py --only scaling` (and by `make bench`) on "
        f"{date}; do not edit by hand. The other benchmarks (the trainer against PyTorch on "
        "fixed shapes, the numpy floor, the diagnostics' and tracking's overheads, study "
        "efficiency, memory) are in `benchmarks/RESULTS.md`.",
        "",
        f"The machine is shared with other work: load average (1, 5, 15 min) {loads[0]} before "
        f"and {loads[1]} after this benchmark. Ratios compare variants measured side by side "
        "(interleaved, medians); absolute times are indicative.",
        "",
        "![Time per epoch against width and depth, ours and PyTorch](figures/scaling.png)",
        "",
        "How to read it: at small sizes an epoch is a few dozen numpy or torch calls on small "
        "arrays and the fixed cost per call decides (numpy's is smaller than autograd's: ours "
        "is ahead); as width or depth grows both spend their time in the same matrix products "
        "and element-wise functions, and the ratio tends to the ratio of those kernels on this "
        "CPU (numpy's OpenBLAS against torch's MKL) plus what ours computes that torch's loop "
        "does not (the loss and accuracy of every epoch, and with diagnostics on the per-layer "
        "statistics). Benchmark 7 (`--only floor`) in RESULTS.md times those kernels alone, "
        "numpy against torch, on the trainer benchmark's shapes.",
        "",
        f"In this run: {crossings(table)}",
        "",
        table.to_markdown(),
        "",
    ])


def run(quick: bool = False, threads: int = 1, repeats: int | None = None) -> Table:
    table = Table(
        key="scaling",
        title="9. Scaling: time per epoch against width and depth",
        what=(
            "Full-batch GD on 512 spiral samples, tanh, float64: width w = 2 hidden layers of "
            "w units; depth d = d hidden layers of 64 units. Ours (diagnostics on, off) and "
            "torch (autograd + SGD, same initial weights), interleaved, medians. Ratio = ours "
            "(diagnostics on) / torch."
        ),
        ratio_label="ours/torch",
    )
    if not has_module("torch"):
        table.skipped = TORCH_MISSING
        return table
    import torch

    torch.set_num_threads(threads)
    repeats = repeats if repeats is not None else (1 if quick else 3)
    load_before = load_average()
    results: dict[str, dict[int, dict]] = {"width": {}, "depth": {}}
    for axis, values in (("width", QUICK_WIDTHS if quick else WIDTHS),
                         ("depth", QUICK_DEPTHS if quick else DEPTHS)):
        for v in values:
            hidden = (v, v) if axis == "width" else (64,) * v
            wl = workload(hidden)
            r = results[axis][v] = point(wl, threads, quick, repeats)
            table.add(Row(
                case=f"{axis} {v}",
                ratio=r["on"] / r["torch"],
                cells={"network": wl.label, "epochs": str(int(r["epochs"])),
                       "ours, diag on": fmt_time(r["on"]), "ours, diag off": fmt_time(r["off"]),
                       "torch": fmt_time(r["torch"]),
                       "off/torch": fmt_ratio(r["off"] / r["torch"])},
                values={"on_s": r["on"], "off_s": r["off"], "torch_s": r["torch"]},
            ))
            print(f"  {axis} {v}: on {fmt_time(r['on'])}, off {fmt_time(r['off'])}, "
                  f"torch {fmt_time(r['torch'])}", flush=True)
    table.notes.insert(0, f"{repeats} interleaved repeats, medians. " + clock_note(threads))
    if not quick:
        figure(results["width"], results["depth"], FIGURE)
        PAGE.write_text(page(table, (load_before, load_average())))
        table.notes.append(f"Figure and page written: docs/{FIGURE.relative_to(PAGE.parent)}, "
                           "docs/performance.md.")
    return table
