"""Whether a run ended at chance accuracy, from a row of the runs table (a dict), importable
without pandas or MLflow (the gradient-flow page's worker reads it too). Chance itself is
defined in engine/run_summary.py."""

from __future__ import annotations

import math

from backprop_lab.engine import run_summary as rs


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def run_chance(row: dict) -> rs.Chance | None:
    """Chance of a run from its params (``data.chance_*``); for runs recorded before those
    existed, 1/k of its ``data.n_classes`` classes; None when neither is known."""
    accuracy, tolerance = row.get("chance_accuracy"), row.get("chance_tolerance")
    if _finite(accuracy) and _finite(tolerance):
        return rs.Chance(float(accuracy), float(tolerance))
    k = row.get("n_classes")
    if _finite(k) and int(k) >= 2:
        return rs.Chance.uniform(int(k))
    return None


def at_chance(row: dict) -> bool | None:
    """Did the run end at chance accuracy (True/False; None when unknown)? The final
    validation accuracy, else training's, against :func:`run_chance`."""
    chance = run_chance(row)
    accuracy = row.get("val/accuracy")
    if not _finite(accuracy):
        accuracy = row.get("train/accuracy")
    if chance is None or not _finite(accuracy):
        return None
    return chance.at_chance(float(accuracy))
