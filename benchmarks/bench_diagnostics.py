"""Benchmark 2: the cost of the per-layer diagnostics (``train(..., diagnostics=True)`` vs False).

Same network, data and initial weights; full-batch gradient descent; medians of interleaved
repeats. With diagnostics off the trainer still records the loss and accuracy every epoch.
Where the goal is missed, a cProfile of the diagnostics-on run is attached.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import (
    Row,
    Sample,
    Table,
    at_most,
    clock_note,
    details,
    fmt_ratio,
    fmt_time,
    interleaved,
    medians,
    primary,
    profile_top,
)
from benchmarks.workloads import DEEP, NOTEBOOK, Workload, run_ours, run_steady

GOAL = 1.15


def best_of(fn, loops: int, repeats: int = 5) -> float:
    """Fastest mean CPU time of ``fn()`` over ``repeats`` runs of ``loops`` calls."""
    times = []
    for _ in range(repeats):
        tic = time.thread_time()
        for _ in range(loops):
            fn()
        times.append((time.thread_time() - tic) / loops)
    return min(times)


def breakdown(wl: Workload, ds, loops: int) -> dict[str, float]:
    """Per-epoch CPU time of the parts of a full-batch epoch, timed in isolation (best of 5):
    the passes and the recorder's per-epoch work (its row: the per-layer reduction inside
    backward, ``measure`` and ``record_update``)."""
    from backprop_lab.engine.diagnostics import DiagnosticsRecorder
    from backprop_lab.engine.history import History

    net = wl.net(ds)
    X, Y = ds.X_train, ds.Y_train
    ws = net.new_workspace(ds.n_train)
    rec = DiagnosticsRecorder(net, ws)
    history = History(1, net.n_layers, False, True)

    def passes(hook=None) -> None:
        net.forward(X, ws)
        net.loss(ws, Y)
        net.accuracy(ws, Y)
        net.backward(Y, ws, hook)

    def measured() -> None:
        passes(rec.on_layer)
        rec.measure(0, history)
        rec.record_update(0, history)

    with np.errstate(all="ignore"):
        passes()
        measured()
        out = {"passes": best_of(passes, loops)}
        out["row"] = max(best_of(measured, loops) - out["passes"], 0.0)
    return out


def run(quick: bool = False, threads: int = 1, workloads: tuple[Workload, ...] = (NOTEBOOK, DEEP),
        repeats: int | None = None) -> Table:
    table = Table(
        key="diagnostics",
        title="2. Diagnostics overhead",
        what=(
            "The same full-batch training with the per-layer diagnostics on (9 statistics per "
            "layer per epoch, see `diagnostics.py`) and off (loss and accuracy only). "
            "Ratio = time per steady-state epoch on / off (timed between history rows by a "
            "training callback: building the network, allocating the workspaces and the final "
            "probe pass are left out). The `isolated` columns time the parts of an "
            "epoch alone (best of 5, CPU time): forward + loss + accuracy + backward, and the "
            "recorder's work for one history row (the per-layer reduction inside backward, "
            "`measure` and `record_update`)."
        ),
        ratio_label="on/off",
    )
    repeats = repeats if repeats is not None else (1 if quick else 9)
    for wl in workloads:
        epochs = wl.n_epochs(quick)
        ds = wl.data(np.float64, quick)

        def once(diagnostics: bool, wl=wl, ds=ds, epochs=epochs) -> Sample:
            return run_steady(wl, ds, np.float64, diagnostics=diagnostics, epochs=epochs)

        times = interleaved({"on": lambda: once(True), "off": lambda: once(False)}, repeats)
        on_s, off_s = medians(times["on"]), medians(times["off"])
        on, off = primary(on_s, threads), primary(off_s, threads)
        cells: dict[str, str] = {}
        try:  # recorder internals: informative only, never fatal
            parts = breakdown(wl, ds, loops=2 if quick else max(5, int(0.2 / max(off, 1e-6))))
            cells = {
                "isolated: passes": fmt_time(parts["passes"]),
                "row": fmt_time(parts["row"]),
            }
        except Exception as exc:
            table.notes.append(f"{wl.key}: no breakdown ({type(exc).__name__}: {exc})")
        row = table.add(Row(
            case=wl.key,
            ratio=on / off,
            goal=at_most(GOAL),
            cells={
                "workload": wl.label,
                "epochs": str(epochs),
                "diag on": fmt_time(on),
                "diag off": fmt_time(off),
                "added per epoch": fmt_time(on - off),
                "wall on/off": fmt_ratio(on_s.wall / off_s.wall),
                **cells,
            },
            values={"on_s": on, "off_s": off, "wall_ratio": on_s.wall / off_s.wall},
        ))
        if row.status != "PASS" and cells:
            p = {k: parts[k] for k in ("passes", "row")}
            table.notes.append(
                f"**{wl.key}: why the goal is missed.** In isolation the passes of an epoch take "
                f"{fmt_time(p['passes'])} and the recorder adds {fmt_time(p['row'])} a row "
                f"({fmt_ratio((p['passes'] + p['row']) / p['passes'])}x; the "
                f"goal allows {fmt_time((GOAL - 1) * p['passes'])}). "
                + ("At this size the recorder's cost is the fixed cost of its numpy calls, "
                   "whatever their size (the per-layer sums inside backward, the squared "
                   "weights, gradients and steps, the row's statistics), not arithmetic."
                   if p["passes"] < 1e-3 else
                   "At this size the cost is arithmetic: one more pass over every layer's "
                   "errors, activations and derivatives, and over the weights and gradients.")
                + " The run's own on/off ratio also includes cache effects and the machine's "
                "noise (see the wall column).")
        if row.status != "PASS" and not quick:
            profile = profile_top(
                lambda wl=wl, ds=ds, epochs=epochs: run_ours(
                    wl, ds, np.float64, diagnostics=True, epochs=epochs))
            table.notes.append(details(
                f"cProfile of the diagnostics-on run, {wl.key} ({epochs} epochs; ratio "
                f"{fmt_ratio(row.ratio)})", profile))
    table.notes.insert(0, f"{repeats} interleaved repeats after a warm-up round, medians. "
                       + clock_note(threads))
    return table
