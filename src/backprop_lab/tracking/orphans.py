"""Runs left RUNNING by a process that is gone: find them, and mark them FAILED with a reason.

    python -m backprop_lab.tracking.orphans                  # list RUNNING runs of the store
    python -m backprop_lab.tracking.orphans --repair         # ... and mark the orphans FAILED
    python -m backprop_lab.tracking.orphans --uri URI --repair --experiment backprop-lab

A process that ends normally, fails, or is stopped by SIGINT, SIGTERM or SIGHUP ends its run
itself. One killed by SIGKILL, the OOM killer or a dying machine cannot: its run stays RUNNING.
Each run records who writes it and a heartbeat (tracking/heartbeat.py); a RUNNING run is

- **alive** when its process runs on this host (same pid, same process start time), or, for a
  process on another host, when its heartbeat is younger than ten beat intervals;
- **orphaned** when its process is gone from this host (no such pid, or the pid now belongs to
  a process started at another time), or when a process on another host has not beaten for ten
  intervals (5 minutes by default);
- **unknown** when it has no heartbeat tags (made by an older backprop-lab or another tool):
  listed, never marked.

Every command that opens a store for training (the launching process of ``train.py``) runs the
same check on its experiment and marks the orphans it finds, printing one line each; nothing
alive is marked. The mark is ``FAILED`` with ``backprop_lab.outcome=failed`` and a
``backprop_lab.failure_reason`` saying which process vanished and when it was last seen; unless
the job's folder (tag ``backprop_lab.output_dir``) holds a summary.json for the run: then the
job ended but could not tell the store (a server gone, a full disk), and its own outcome and
reason are recorded (KILLED by SIGTERM, FAILED because the store failed, ...).

For each orphan whose job folder holds a history.csv, the check offers the command that puts
the epochs the store missed back into the run (tracking/restore.py).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from backprop_lab.contract import (
    HISTORY_FILE,
    OUTCOME_TAG,
    PROCESS_TAG,
    REASON_TAG,
    STATUS,
    SUMMARY_FILE,
)
from backprop_lab.tracking.heartbeat import DEFAULT_SECONDS, process_start
from backprop_lab.tracking.records import RunningRun

STALE_BEATS = 10  # a process on another host is gone after this many missed beats

ALIVE, ORPHANED, UNKNOWN = "alive", "orphaned", "unknown"


@dataclass
class Verdict:
    run: RunningRun
    state: str  # alive | orphaned | unknown
    reason: str
    status: str = "FAILED"  # what an orphan is marked
    outcome: str = "failed"


def restore_command(run_id: str) -> str:
    """The command that puts a run's missing epochs back (tracking/restore.py)."""
    return f"python -m backprop_lab.tracking.restore {run_id}"


def restore_hint(run_id: str, output_dir: str | None) -> str | None:
    """One line offering the restore when the job's folder holds a history (else None)."""
    if output_dir and (Path(output_dir) / HISTORY_FILE).is_file():
        return (f"its job kept its metrics in {Path(output_dir) / HISTORY_FILE}: "
                f"{restore_command(run_id)}")
    return None


def recorded_ending(run: RunningRun) -> tuple[str, str | None] | None:
    """(outcome, reason) the job wrote in its summary.json when it could not end its run in the
    store (a server gone, a full disk), if that folder is readable here."""
    if not run.output_dir:
        return None
    try:
        summary = json.loads((Path(run.output_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if summary.get("run_id") != run.run_id or summary.get("outcome") not in STATUS:
        return None
    return summary["outcome"], summary.get("failure_reason")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def judge(run: RunningRun, *, now_ms: int | None = None, host: str | None = None) -> Verdict:
    """Alive, orphaned or unknown (see the module docstring), and why."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    host = socket.gethostname() if host is None else host
    if not run.process:
        return Verdict(run, UNKNOWN, "no heartbeat tags (not made by this version)")
    parts = run.process.split()
    try:
        run_host, pid = parts[0], int(parts[1])
        started = parts[2] if len(parts) > 2 and parts[2] != "-" else ""
        every = float(parts[3]) if len(parts) > 3 else DEFAULT_SECONDS
    except (IndexError, ValueError):
        return Verdict(run, UNKNOWN, f"unreadable {PROCESS_TAG} tag {run.process!r}")
    seen = f"last heartbeat {_when(run.heartbeat)}"
    if run_host == host:
        if not _pid_alive(pid):
            return Verdict(run, ORPHANED,
                           f"orphaned: process {pid} on {host} ended without closing the run "
                           f"(killed, e.g. SIGKILL or out of memory); {seen}")
        if started and process_start(pid) not in ("", started):
            return Verdict(run, ORPHANED,
                           f"orphaned: process {pid} on {host} ended without closing the run "
                           f"(its pid now belongs to another process); {seen}")
        return Verdict(run, ALIVE, f"process {pid} on {host} is running")
    beat = run.heartbeat if run.heartbeat is not None else run.start_time
    silent = (now_ms - beat) / 1000
    if silent > STALE_BEATS * every:
        return Verdict(run, ORPHANED,
                       f"orphaned: no heartbeat from process {pid} on {run_host} for "
                       f"{silent / 60:.0f} min ({seen})")
    return Verdict(run, ALIVE, f"process {pid} on {run_host} beat {silent:.0f} s ago")


def check(backend, experiment_ids: list[str] | None = None, *,
          repair: bool = False) -> list[Verdict]:
    """Judge every RUNNING run of ``experiment_ids`` (None: all) in the store of ``backend``;
    with ``repair``, mark the orphaned ones FAILED with their reason."""
    verdicts = [judge(run) for run in backend.running_runs(experiment_ids)]
    for verdict in verdicts:
        ended = recorded_ending(verdict.run) if verdict.state == ORPHANED else None
        if ended is not None:  # the job ended, but could not tell the store
            verdict.outcome, verdict.status = ended[0], STATUS[ended[0]]
            verdict.reason = (f"{ended[1] or ended[0]} (recorded later: the process could not "
                              "end the run in the store)")
    if repair:
        for verdict in verdicts:
            if verdict.state == ORPHANED:
                backend.mark_failed(verdict.run.run_id,
                                    {OUTCOME_TAG: verdict.outcome, REASON_TAG: verdict.reason},
                                    verdict.status)
    return verdicts


def repair_on_open(backend, experiment_id: str, out=sys.stdout) -> list[Verdict]:
    """The check a training command makes when it opens a store: mark the experiment's orphans,
    say so in one line each; never fails the command (a store it cannot read says so later)."""
    try:
        verdicts = check(backend, [experiment_id], repair=True)
    except Exception as exc:
        out.write(f"warning: could not check {backend.uri} for orphaned runs: {exc}\n")
        return []
    for verdict in verdicts:
        if verdict.state == ORPHANED:
            out.write(f"Marked run {verdict.run.run_id} ({verdict.run.name}) "
                      f"{verdict.status}: {verdict.reason}\n")
            offer = restore_hint(verdict.run.run_id, verdict.run.output_dir)
            if offer:
                out.write(f"  {offer}\n")
    return verdicts


def main(argv: list[str] | None = None) -> int:
    """List the RUNNING runs of a store with their state; ``--repair`` marks the orphans."""
    from backprop_lab.tracking import open_store, resolve_tracking_uri

    parser = argparse.ArgumentParser(
        prog="python -m backprop_lab.tracking.orphans",
        description="List RUNNING runs (alive, orphaned, unknown); --repair marks orphans FAILED.")
    parser.add_argument("--uri", default=None,
                        help="tracking URI (default: $MLFLOW_TRACKING_URI, else the repo's "
                             "mlflow.db)")
    parser.add_argument("--experiment", default=None, help="only this experiment (by name)")
    parser.add_argument("--repair", action="store_true",
                        help="mark the orphaned runs FAILED with the reason shown")
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.uri)
    backend = open_store(uri)
    ids = None
    if args.experiment:
        found = backend.experiment_id(args.experiment)
        if found is None:
            sys.stderr.write(f"Error: no experiment {args.experiment!r} in {uri}\n")
            return 1
        ids = [found]
    verdicts = check(backend, ids, repair=args.repair)
    if not verdicts:
        print(f"No RUNNING runs in {uri}.")
        return 0
    for verdict in verdicts:
        run = verdict.run
        mark = (f" -> marked {verdict.status}" if args.repair and verdict.state == ORPHANED
                else "")
        print(f"{run.run_id}  {verdict.state:<8}  {run.name}: {verdict.reason}{mark}")
        offer = restore_hint(run.run_id, run.output_dir) if verdict.state == ORPHANED else None
        if offer:
            print(f"  {offer}")
    orphans = sum(v.state == ORPHANED for v in verdicts)
    if orphans and not args.repair:
        print(f"{orphans} orphaned run(s): run again with --repair to mark them FAILED.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
