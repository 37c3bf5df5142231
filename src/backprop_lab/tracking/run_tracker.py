"""The training callback that streams a History into one MLflow run.

Every ``block_values`` values (rows x metrics) the rows completed since the last write go to the
store as one block (:meth:`Backend.log_metrics`: one transaction on SQLite); the rest go when
training ends, fails or is interrupted. Each row is stamped with the wall-clock time at which
training completed it, so MLflow's "relative time" axis shows the run as it went.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np

from backprop_lab.engine.history import LOG10_METRICS, log10_companions
from backprop_lab.tracking.store import log_metric_blocks

#: Values per write. Larger blocks cost less per value (fewer transactions or requests) but wait
#: longer before they show in the UI.
BLOCK_VALUES = 8192
#: At most about this many epochs of a run get the log10 companions (every k-th epoch, and the
#: last): MLflow's UI draws at most 320 points of a metric per chart line (its sampled metric
#: history, ``maxResults = 320``), so more would cost writes nobody sees. The plain metrics
#: keep every epoch. Companion rows wait until about ``block_values`` of them are due (or the
#: run ends) and then ride with a block of the plain metrics: each write touches the store's
#: pages of every metric it holds, and on a busy disk those pages, not the values, cost.
COMPANION_POINTS = 320


def companion_every(capacity: int, log_every: int = 1) -> int:
    """Of the rows ``log_every`` lets through a run of ``capacity`` rows, every k-th gets the
    log10 companions (at most about :data:`COMPANION_POINTS`)."""
    logged = -(-capacity // max(1, log_every))  # ceil
    return -(-logged // COMPANION_POINTS)


def companion_rows(rows: np.ndarray, capacity: int, log_every: int = 1,
                   last: bool = False) -> np.ndarray:
    """Which of the logged ``rows`` get the log10 companions: every k-th, the run's planned
    last row (``capacity - 1``) and, with ``last``, the last of ``rows`` (a run's final
    write). The tracker and the restore command (tracking/restore.py) both use it."""
    rows = np.asarray(rows)
    keep = ((rows // max(1, log_every)) % companion_every(capacity, log_every) == 0) | (
        rows == capacity - 1)
    if last and keep.size:
        keep[-1] = True
    return keep


class RunTracker:
    """Training callback writing every ``log_every``-th history row (and the last) to a run.

    Args:
        backend: the store (:func:`backprop_lab.tracking.store.open_store`).
        run_id: the run to write to.
        log_every: log every n-th epoch (and always the last one).
        block_values: write once this many values are waiting.
        log10: the per-layer metrics whose log10 is logged too, as companions
            (``engine.history.log10_companions``); empty: none.
    """

    def __init__(self, backend, run_id: str, *, log_every: int = 1,
                 block_values: int = BLOCK_VALUES,
                 log10: Sequence[str] = LOG10_METRICS) -> None:
        self.backend = backend
        self.log10 = tuple(log10)
        self.run_id = run_id
        self.log_every = max(1, int(log_every))
        self.block_values = block_values
        self.history = None
        self._next_row = 0  # rows before this one are written (or skipped by log_every)
        self._rows_per_block = 1
        self._capacity = 0  # rows of a complete run
        self._companions: list[tuple] = []  # companion blocks not written yet
        self._times: np.ndarray | None = None  # ms since the epoch at which each row completed
        self.values_logged = 0
        self.seconds_logging = 0.0
        self.store_failure: BaseException | None = None  # the store's first failed write

    def __repr__(self) -> str:
        return f"RunTracker({self.run_id}, {self.values_logged} values logged)"

    # -- training callback protocol -------------------------------------------------------------
    def on_train_start(self, net, dataset, history) -> None:
        self.attach(history)

    def on_epoch_end(self, epoch: int, history) -> None:
        self._times[epoch] = int(time.time() * 1000)
        if epoch + 1 - self._next_row >= self._rows_per_block:
            self.flush()

    def on_train_end(self, result) -> None:
        self.flush(final=True)

    def _check_store(self, row: int) -> None:
        """Once a write has failed (a full disk, a server gone), say so at once and send no
        more: training goes on, and the job's history.csv keeps every epoch."""
        failure = getattr(self.backend, "failure", None)
        error = failure() if failure is not None else None
        if error is None:
            return
        self.store_failure = error
        sys.stderr.write(
            f"\nwarning: the MLflow store {self.backend.uri} failed near epoch {row} "
            f"({type(error).__name__}: {error}); training goes on without logging to it, the "
            "job's history.csv keeps every epoch (put them back later: python -m "
            f"backprop_lab.tracking.restore {self.run_id})\n")
        sys.stderr.flush()

    # -- writing --------------------------------------------------------------------------------
    def attach(self, history) -> None:
        """Follow ``history`` (a History whose rows complete in order)."""
        if history is self.history:
            return
        self.history = history
        capacity = len(history.scalars["train/loss"])
        self._times = np.zeros(capacity, dtype=np.int64)
        names = history.metric_names()
        self._capacity = capacity
        n_metrics = max(1, len(names))
        self._rows_per_block = max(1, self.block_values // n_metrics) * self.log_every

    def _rows(self, stop: int, final: bool) -> np.ndarray:
        rows = np.arange(self._next_row, stop)
        rows = rows[rows % self.log_every == 0]
        if final and stop > self._next_row and (rows.size == 0 or rows[-1] != stop - 1):
            rows = np.append(rows, stop - 1)  # the final values are the run's latest metrics
        return rows

    def flush(self, final: bool = False, extra: Sequence[tuple] = ()) -> int:
        """Write every complete row not written yet; return the number of values written.

        ``extra``: more blocks (names, steps, values, timestamps) for the same write, e.g. the
        run's end-of-run summary with the final flush (one transaction on SQLite).
        Rows count as written only once the store has them: a flush interrupted (Ctrl-C) or
        failed is repeated by the next one, and the SQLite store ignores rows it already holds.
        """
        if self.history is None and not extra:
            return 0
        if self.history is None:
            log_metric_blocks(self.backend, self.run_id, extra)
            return sum(np.asarray(b[2]).size for b in extra)
        tic = time.perf_counter()
        start, stop = self._next_row, int(self.history.n_rows)
        rows = self._rows(stop, final)
        sent = 0
        if self.store_failure is None:
            self._check_store(stop)
        blocks = []
        if rows.size and self.store_failure is None:
            names, columns = zip(*self.history.metric_items(start, stop))
            values = np.stack(columns)[:, rows - start]
            times = self._times[rows]
            times[times == 0] = int(time.time() * 1000)  # rows completed after a failure
            blocks.append((names, rows, values, times))
            if self.log10:
                keep = companion_rows(rows, self._capacity, self.log_every, last=final)
                extra_names, logs = log10_companions(names, values[:, keep], self.log10)
                if keep.any() and extra_names:
                    self._companions.append((extra_names, rows[keep], logs, times[keep]))
        due = sum(b[2].size for b in self._companions)
        send_companions = bool(self._companions) and (final or due >= self.block_values)
        if send_companions:  # one block: the names are the same in every flush
            blocks.append((self._companions[0][0], *(
                np.concatenate([b[i] for b in self._companions], axis=-1) for i in (1, 2, 3))))
        blocks += list(extra)
        if blocks and self.store_failure is None:
            log_metric_blocks(self.backend, self.run_id, blocks)  # one write
            sent = sum(np.asarray(b[2]).size for b in blocks)
            if send_companions:
                self._companions = []
        if self.store_failure is None:
            self._next_row = max(self._next_row, stop)
        self.values_logged += sent
        self.seconds_logging += time.perf_counter() - tic
        return sent
