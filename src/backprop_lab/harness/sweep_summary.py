"""The sweep's result on its MLflow parent run, readable without picking columns.

MLflow's UI shows a run's ``mlflow.note.content`` tag as its description (markdown) on the run
page: :func:`description` writes there what the sweep ran, how its jobs ended, and a table of
the children with their swept values and final metrics (each run name links to its run), plus,
for an Optuna search, each study's best trial. A tag holds at most 8,000 characters: a longer
table is cut, and says where the whole one is (runs.csv among the parent's artifacts).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backprop_lab.harness.job_context import split_override
from backprop_lab.harness.progress import chance_footnote, end_ratio_cell

NOTE_TAG = "mlflow.note.content"  # the run's description in MLflow's UI
LIMIT = 8000  # MLflow's tag value limit
# L1/LL: grad_norm of layer 1 / of the output layer, at epoch 0 and at the end (flagged when
# the run ended at chance: harness/progress.py end_ratio_cell).
METRICS = (("val loss", "val_loss", ".4g"), ("val acc", "val_accuracy", ".3f"),
           ("train loss", "train_loss", ".4g"), ("L1/LL init", "grad_ratio_init", ".3g"),
           ("L1/LL end", "grad_ratio", end_ratio_cell))


def _fmt(value: Any, spec: str) -> str:
    if value is None or value == "":
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if math.isnan(number) else format(number, spec)


def _short(value: str) -> str:
    """A swept value as the table shows it: a sampled float to 4 significant digits."""
    try:
        return f"{float(value):.4g}" if len(value) > 10 else value
    except ValueError:
        return value


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def children_table(summaries: Sequence[Mapping[str, Any]], swept: Sequence[str],
                   experiment_id: str | None) -> list[str]:
    """Markdown lines: one row per child run, its swept values, outcome and final metrics."""
    head = ["run", *swept, "outcome", *(h for h, _, _ in METRICS)]
    lines = [_row(head), _row(["---"] * len(head))]
    for s in summaries:
        values = dict(split_override(o) for o in s.get("overrides") or [])
        name = s.get("run_name", "?")
        if s.get("run_id") and experiment_id is not None:
            name = f"[{name}](#/experiments/{experiment_id}/runs/{s['run_id']})"
        lines.append(_row([name, *(_short(values.get(k, "")) for k in swept),
                           s.get("outcome", "?"),
                           *(spec(s) if callable(spec) else _fmt(s.get(key), spec)
                             for _, key, spec in METRICS)]))
    return lines


def best_table(path: Path) -> list[str]:
    """Markdown lines of an Optuna search's best_trials.csv (harness/hpo.py), if it exists."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    skip = {"best_run_id", "study"}
    head = [k for k in rows[0] if k not in skip]
    lines = ["", "**Best trial of each study**", "", _row(head), _row(["---"] * len(head))]
    for row in rows:
        lines.append(_row([_fmt(row[k], ".4g") if k not in ("best_run_name",) else row[k]
                           for k in head]))
    return lines


def description(*, title: str, command: str, summaries: Sequence[Mapping[str, Any]],
                swept: Sequence[str], experiment_id: str | None, sweep_dir: Path,
                extra: Sequence[str] = ()) -> str:
    """The parent run's markdown description (at most :data:`LIMIT` characters)."""
    outcomes = Counter(s.get("outcome", "?") for s in summaries)
    head = [
        f"**{title}**: {len(summaries)} runs"
        + (f" over {', '.join(f'`{k}`' for k in swept)}" if swept else "")
        + " (" + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) + ").",
        "",
        f"`{command}`",
        "",
        f"Folder: `{sweep_dir}`; full table: `runs.csv` in this run's artifacts.",
        *extra,
        *best_table(sweep_dir / "best_trials.csv"),
        "",
        "**Runs**",
        "",
    ]
    text = "\n".join(head)
    lines = children_table(summaries, swept, experiment_id)
    note = chance_footnote(summaries)
    # Above the rows, so that a cut table keeps it.
    text += ("\nL1/LL: gradient norm of layer 1 / of the output layer at initialization and at "
             "the end" + (f"; {note}" if note else ".") + "\n\n")
    body = []
    for i, line in enumerate(lines):
        if len(text) + sum(len(b) + 1 for b in body) + len(line) + 80 > LIMIT:
            body.append(f"\n... {len(lines) - i} more rows in runs.csv")
            break
        body.append(line)
    return (text + "\n".join(body))[:LIMIT]
