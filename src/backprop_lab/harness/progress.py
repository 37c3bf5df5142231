"""What the user sees: a tqdm bar per run, a one-line summary per run, a table per multirun."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from backprop_lab.engine.history import layer_metric_name


class ProgressBar:
    """Training callback showing epoch, loss and accuracy in a tqdm bar (on stderr).

    The postfix is refreshed at most every ``refresh_seconds``: a small network trains thousands
    of epochs a second, and formatting it every epoch would cost more than the epoch.
    """

    def __init__(self, epochs: int, desc: str, *, enabled: bool = True,
                 refresh_seconds: float = 0.25) -> None:
        self.epochs = epochs
        self.desc = desc
        self.enabled = enabled
        self.refresh_seconds = refresh_seconds
        self.bar = None
        self._last = 0.0
        self._shown = 0

    def on_train_start(self, net, dataset, history) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm  # the terminal's bar (tqdm.auto would import asyncio)

        # epochs + 1 rows: row 0 is the network at initialization.
        self.bar = tqdm(total=self.epochs + 1, desc=self.desc, unit="epoch", leave=False,
                        dynamic_ncols=True, file=sys.stderr, mininterval=self.refresh_seconds)

    def on_epoch_end(self, epoch: int, history) -> None:
        if self.bar is None:
            return
        self.bar.update(epoch + 1 - self._shown)
        self._shown = epoch + 1
        now = time.monotonic()
        if now - self._last >= self.refresh_seconds:
            self._last = now
            loss = history.scalars["train/loss"][epoch]
            acc = history.scalars["train/accuracy"][epoch]
            self.bar.set_postfix_str(f"loss {loss:.4g} acc {acc:.3f}", refresh=False)

    def on_train_end(self, result) -> None:
        if self.bar is not None and result.history.n_rows:
            final = result.history.final()
            self.bar.set_postfix_str(
                f"loss {final['train/loss']:.4g} acc {final['train/accuracy']:.3f}")
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def grad_ratio(final: Mapping[str, float], n_layers: int) -> float:
    """grad_norm of layer 1 over grad_norm of layer L at the final epoch (<< 1: vanishing)."""
    first = final.get(layer_metric_name("grad_norm", 1), math.nan)
    last = final.get(layer_metric_name("grad_norm", n_layers), math.nan)
    if not (math.isfinite(first) and math.isfinite(last)) or last == 0:
        return math.nan
    return first / last


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, spec)
    return str(value)


def summary_line(summary: Mapping[str, Any]) -> str:
    """One line per run, e.g. ``[finished] tanh-depth10: 300 epochs in 1.2 s | train loss ...``."""
    s = summary
    parts = [f"[{s['outcome']}] {s['run_name']}: {s.get('epochs_run', 0)} epochs"
             f" in {s.get('seconds', 0.0):.1f} s"]
    if s.get("train_loss") is not None:
        acc = _fmt(s.get("train_accuracy"), ".3f")
        parts.append(f"train loss {_fmt(s['train_loss'])} acc {acc}")
    if s.get("val_loss") is not None:
        parts.append(f"val loss {_fmt(s['val_loss'])} acc {_fmt(s.get('val_accuracy'), '.3f')}")
    if s.get("grad_ratio_init") is not None or s.get("grad_ratio") is not None:
        parts.append(f"grad L1/L{s.get('n_layers', 'L')} init "
                     f"{_fmt(s.get('grad_ratio_init'), '.3g')}, end {end_ratio_cell(s)}")
    elif s.get("at_chance"):
        parts.append("at chance")
    if s.get("failure_reason"):
        parts.append(s["failure_reason"])
    if s.get("skipped"):  # a resumed sweep's job done earlier (harness/resume.py)
        parts.append(f"skipped: {s['skipped']}")
    if s.get("run_id"):
        parts.append(f"mlflow run {s['run_id']}")
    return " | ".join(parts)


def end_ratio_cell(summary: Mapping[str, Any]) -> str:
    """The layer-1 / layer-L gradient ratio at the end, flagged ``(at chance)`` when the run's
    final accuracy is at chance (engine/run_summary.py): a network that learned nothing can
    show any ratio, and it must not read like a recovery."""
    text = _fmt(summary.get("grad_ratio"), ".3g")
    return f"{text} (at chance)" if summary.get("at_chance") else text


TABLE_COLUMNS = (
    ("run", "run_name", "s"),
    ("activation", "activation", "s"),
    ("outcome", "outcome", "s"),
    ("train loss", "train_loss", ".4g"),
    ("train acc", "train_accuracy", ".3f"),
    ("val loss", "val_loss", ".4g"),
    ("val acc", "val_accuracy", ".3f"),
    ("L1/LL init", "grad_ratio_init", ".3g"),  # grad_norm layer 1 / layer L at epoch 0
    ("L1/LL end", "grad_ratio", end_ratio_cell),  # the same at the last epoch, flagged
)


def chance_footnote(summaries: Sequence[Mapping[str, Any]]) -> str | None:
    """The line under a table that flags runs at chance (None when none is)."""
    from backprop_lab.engine.run_summary import CHANCE_NOTE

    flagged = [s for s in summaries if s.get("at_chance")]
    if not flagged:
        return None
    levels = sorted({f"{s['chance_accuracy']:.3g} + {s['chance_tolerance']:.2g}"
                     for s in flagged if s.get("chance_accuracy") is not None})
    return (f"{CHANCE_NOTE}" + (f" (here: {', '.join(levels)})" if levels else "") + ".")


def runs_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of a multirun's runs (one row each, in job order); L1/LL =
    grad_norm of layer 1 / of the output layer, at initialization and at the end."""
    rows = [[h for h, _, _ in TABLE_COLUMNS]]
    for s in summaries:
        rows.append([spec(s) if callable(spec) else
                     _fmt(s.get(key), spec) if spec != "s" else _fmt(s.get(key))
                     for _, key, spec in TABLE_COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = chance_footnote(summaries)
    if note:
        lines.append(note)
    return "\n".join(lines)
