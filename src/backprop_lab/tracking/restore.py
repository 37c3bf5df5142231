"""Put back into an MLflow run every epoch its store is missing, from the job's history.csv.

    python -m backprop_lab.tracking.restore RUN_ID [RUN_ID ...]   # --uri URI, --dir JOB_FOLDER
    python -m backprop_lab.tracking.restore --all                 # every run with a job folder

The job's ``history.csv`` is its own record: appended block by block as training goes
(harness/history_log.py), it holds every epoch up to the last block even after ``kill -9``,
and every epoch of a run whose store failed (a full disk, a read-only store, a server gone).
For each run this command

1. reads the job folder (the run's ``backprop_lab.output_dir`` tag, or ``--dir``);
2. finds, metric by metric, the steps the store lacks among those the run would have logged
   (every ``tracking.log_every``-th epoch and the last; the ``*_log10`` companions of the
   run's ``tracking.log10`` metrics included), and writes only those, in blocks, through the
   same writers as training; their timestamps are spread evenly over the run's start and end;
3. marks the run's ending as it was: the job's summary.json says how training ended (a run
   marked FAILED only because its store failed becomes FINISHED once its metrics are back);
   without one (``kill -9``), a run left RUNNING by a vanished process is marked FAILED as the
   orphan repair marks it, and a run already ended keeps its status. A run whose process is
   alive is refused.

Run twice, the second call finds nothing missing and changes nothing. The orphan repair
(tracking/orphans.py, ``restore_hint``) prints this command for each orphan whose job folder
holds a history.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backprop_lab.contract import (
    HISTORY_FILE,
    OUTCOME_TAG,
    OUTPUT_DIR_TAG,
    REASON_TAG,
    STATUS,
    SUMMARY_FILE,
)
from backprop_lab.engine.history import is_log10_companion

RESTORED_TAG = "backprop_lab.restored"
MAX_BLOCK_VALUES = 100_000


class RestoreError(RuntimeError):
    """A run that cannot be restored (no job folder, no history, still running)."""


@dataclass
class Restored:
    run_id: str
    values: int  # values written now
    status: str  # the run's status afterwards
    note: str  # what was done, one sentence


def read_history(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(metric names (k,), epochs (n,), values (k, n)) of a history.csv; empty fields as NaN.
    A last line cut short (a process killed while writing) is left out."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[0] != "epoch":
            raise RestoreError(f"{path} is not a history.csv (no epoch column)")
        rows = [row for row in reader if len(row) == len(header)]
    epochs, values = [], []
    for row in rows:
        try:
            values.append([float(v) if v else math.nan for v in row[1:]])
            epochs.append(int(row[0]))
        except ValueError:  # a torn line
            break
    grid = np.asarray(values, dtype=np.float64).reshape(len(values), len(header) - 1).T
    return header[1:], np.asarray(epochs, dtype=np.int64), grid


def _log10_metrics(params: dict[str, str]) -> list[str]:
    listed = [v for k, v in sorted(params.items()) if k.startswith("tracking.log10.")]
    return listed if listed or "tracking.log10" in params else ["grad_weight_ratio"]


def expected(names: list[str], epochs: np.ndarray, values: np.ndarray,
             params: dict[str, str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """What the run's tracker would have sent: the logged rows, with the log10 companions."""
    from backprop_lab.engine.history import log10_companions

    every = max(1, int(params.get("tracking.log_every", "1") or 1))
    keep = epochs % every == 0
    if epochs.size:
        keep[-1] = True
    epochs, values = epochs[keep], values[:, keep]
    log10 = _log10_metrics(params)
    if log10 and values.size:
        extra_names, extra = log10_companions(names, values, log10)
        names, values = [*names, *extra_names], np.concatenate([values, extra])
    return names, epochs, values


def _summary_blocks(folder: Path, run_id: str, stored: set[str], stamp: int) -> list[tuple]:
    """The run's ``vanishing/`` metrics (engine/run_summary.py) from its summary.json, those the
    store lacks (a run whose store failed before it ended), each at the epoch it describes."""
    from backprop_lab.engine import run_summary as rs

    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return []
    if summary.get("run_id") != run_id:
        return []
    last = int(summary.get("epochs_run") or 0)
    values = {name: summary.get(key) for key, name in rs.SUMMARY_KEYS.items()}
    if summary.get("at_chance") is not None:
        values[rs.AT_CHANCE] = float(summary["at_chance"])
    blocks = []
    for names, step in ((rs.AT_INIT, 0), (rs.AT_END, last)):
        found = [(n, float(values[n])) for n in names
                 if n not in stored and values.get(n) is not None
                 and math.isfinite(float(values[n]))]
        if found:
            blocks.append(([n for n, _ in found], np.array([step]),
                           np.array([[v] for _, v in found]), np.array([stamp])))
    return blocks


def _companion_columns(epochs: np.ndarray, params: dict[str, str]) -> list[int]:
    """The columns of ``epochs`` the tracker sends the log10 companions for
    (tracking/run_tracker.py ``companion_rows``: every k-th epoch and the last)."""
    from backprop_lab.tracking.run_tracker import companion_rows

    every = max(1, int(params.get("tracking.log_every", "1") or 1))
    try:
        capacity = int(params["epochs"]) + 1
    except (KeyError, ValueError):
        capacity = int(epochs[-1]) + 1 if epochs.size else 1
    return np.flatnonzero(companion_rows(epochs, capacity, every, last=True)).tolist()


def _stored_steps(client, uri: str, run_id: str, names: list[str]) -> dict[str, set[int]]:
    """The steps the store holds for each of ``names`` (one query on a SQLite store)."""
    from backprop_lab.tracking.store import sqlite_path

    db = sqlite_path(uri)
    if db is None:
        return {name: {m.step for m in client.get_metric_history(run_id, name)}
                for name in names}
    import sqlite3

    found: dict[str, set[int]] = {name: set() for name in names}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for key, step in con.execute("SELECT key, step FROM metrics WHERE run_uuid = ?",
                                     (run_id,)):
            if key in found:
                found[key].add(step)
    finally:
        con.close()
    return found


def _ending(run, folder: Path) -> tuple[str, str | None] | None:
    """(outcome, reason) to mark the run with, or None to leave its status as it is."""
    from backprop_lab.tracking.orphans import ALIVE, judge
    from backprop_lab.tracking.records import running_run

    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        summary = None
    if summary is not None and summary.get("run_id") == run.info.run_id:
        outcome = summary.get("training_outcome") or summary.get("outcome")
        if outcome in STATUS:
            reason = (summary.get("training_reason") if summary.get("training_outcome")
                      else summary.get("failure_reason"))
            return outcome, reason
    if run.info.status != "RUNNING":
        return None
    verdict = judge(running_run(run.info.run_id, run.info.run_name or "",
                                run.info.experiment_id, run.info.start_time, run.data.tags))
    if verdict.state == ALIVE:
        raise RestoreError(f"run {run.info.run_id} is still being written ({verdict.reason})")
    return "failed", verdict.reason


def restore_run(uri: str, run_id: str, folder: Path | None = None) -> Restored:
    """Restore one run (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    from backprop_lab.tracking.store import open_store

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    folder = folder or (Path(run.data.tags[OUTPUT_DIR_TAG])
                        if run.data.tags.get(OUTPUT_DIR_TAG) else None)
    if folder is None:
        raise RestoreError(f"run {run_id} names no job folder: give it with --dir")
    path = folder / HISTORY_FILE
    if not path.is_file():
        raise RestoreError(f"run {run_id}: no {HISTORY_FILE} in {folder}")
    ending = _ending(run, folder)  # a live run is refused before anything is written
    names, epochs, values = expected(*read_history(path), run.data.params)
    stored = _stored_steps(client, uri, run_id, names)
    start = run.info.start_time or int(time.time() * 1000)
    end = run.info.end_time or max(start, int(path.stat().st_mtime * 1000))
    last = max(int(epochs[-1]), 1) if epochs.size else 1
    stamps = start + (end - start) * epochs // last
    groups: dict[tuple[int, ...], list[int]] = {}  # missing columns -> metric rows
    sent = _companion_columns(epochs, run.data.params)
    for i, name in enumerate(names):
        columns = sent if is_log10_companion(name) else range(epochs.size)
        missing = tuple(j for j in columns if int(epochs[j]) not in stored[name])
        if missing:
            groups.setdefault(missing, []).append(i)
    backend = open_store(uri)
    written = 0
    for columns, rows in groups.items():
        cols = np.asarray(columns)
        step = max(1, MAX_BLOCK_VALUES // len(rows))
        for lo in range(0, cols.size, step):
            part = cols[lo:lo + step]
            backend.log_metrics(run_id, [names[i] for i in rows], epochs[part],
                                values[np.ix_(rows, part)], stamps[part])
            written += len(rows) * part.size
    summary_blocks = _summary_blocks(folder, run_id, set(run.data.metrics), end)
    for block in summary_blocks:
        backend.log_metrics(run_id, *block)
        written += block[2].size
    backend.flush()
    status = run.info.status
    notes = [f"{written} values restored from {path}" if written
             else "no epoch missing from the store"]
    if ending is not None:
        outcome, reason = ending
        wanted = STATUS[outcome]
        if status != wanted or run.data.tags.get(OUTCOME_TAG) != outcome:
            client.set_tag(run_id, OUTCOME_TAG, outcome)
            if reason:
                client.set_tag(run_id, REASON_TAG, reason)
            elif REASON_TAG in run.data.tags:
                client.delete_tag(run_id, REASON_TAG)
            client.set_terminated(run_id, wanted, end_time=run.info.end_time or end)
            notes.append(f"marked {wanted} ({outcome}{': ' + reason if reason else ''})")
            status = wanted
    if written:
        client.set_tag(run_id, RESTORED_TAG, f"{written} values from {HISTORY_FILE} at "
                       + time.strftime("%Y-%m-%d %H:%M:%S"))
    return Restored(run_id, written, status, "; ".join(notes))


def runs_with_history(uri: str) -> list[tuple[str, Path]]:
    """Every run of the store whose job folder here holds a history.csv."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    found = []
    for run in client.search_runs(ids, max_results=50000) if ids else []:
        folder = run.data.tags.get(OUTPUT_DIR_TAG)
        if folder and (Path(folder) / HISTORY_FILE).is_file():
            found.append((run.info.run_id, Path(folder)))
    return found


def main(argv: list[str] | None = None) -> int:
    from backprop_lab.tracking import resolve_tracking_uri
    from backprop_lab.tracking.secrets import install_output_masking, mask
    from backprop_lab.tracking.store import store_problem

    install_output_masking()
    parser = argparse.ArgumentParser(
        prog="python -m backprop_lab.tracking.restore",
        description="Restore into MLflow runs the epochs their store is missing, from each "
                    "job's history.csv; mark each run's ending as the job recorded it.")
    parser.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    parser.add_argument("--all", action="store_true",
                        help="every run of the store whose job folder is on this machine")
    parser.add_argument("--uri", default=None,
                        help="tracking URI (default: $MLFLOW_TRACKING_URI, else the repo's "
                             "mlflow.db)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="the job's folder (default: the run's backprop_lab.output_dir tag)")
    args = parser.parse_args(argv)
    if not args.run_ids and not args.all:
        parser.error("give RUN_ID(s) or --all")
    uri = resolve_tracking_uri(args.uri)
    try:
        targets = ([(r, args.dir) for r in args.run_ids] if args.run_ids
                   else runs_with_history(uri))
    except Exception as exc:
        sys.stderr.write(f"Error: cannot read {mask(uri)}: {store_problem(exc, created=True)}\n")
        return 1
    failures = 0
    for run_id, folder in targets:
        try:
            done = restore_run(uri, run_id, folder)
        except RestoreError as exc:
            failures += 1
            sys.stderr.write(f"Error: {exc}\n")
            continue
        except Exception as exc:
            failures += 1
            sys.stderr.write(f"Error: run {run_id}: {store_problem(exc, created=True)}\n")
            continue
        print(f"{run_id}  {done.status:<8}  {done.note}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
