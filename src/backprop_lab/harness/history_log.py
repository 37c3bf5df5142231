"""history.csv written as training goes, block by block: the job's own record survives kill -9.

:class:`HistoryLog` is a training callback. Every block of rows (``block_values`` values, the
RunTracker's block size, or ``max_seconds`` of training, whichever comes first) is appended to
``<job folder>/history.csv`` and flushed to the operating system, so a process killed by
SIGKILL or the OOM killer leaves every epoch up to its last block on disk; the rest is appended
when training ends, fails or is interrupted (:meth:`close`). The layout is
:func:`~backprop_lab.harness.run_outputs.write_history_csv`'s: an ``epoch`` column, then one
column per MLflow metric name; 9 significant digits; NaN as an empty field.

The file is what ``python -m backprop_lab.tracking.restore`` puts back into an MLflow run whose
store missed epochs (a full disk, a read-only store, a server outage, kill -9).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from backprop_lab.tracking.run_tracker import BLOCK_VALUES


class HistoryLog:
    """Training callback appending complete History rows to a CSV file (see the module doc)."""

    def __init__(self, path: Path, *, block_values: int = BLOCK_VALUES,
                 max_seconds: float = 2.0) -> None:
        self.path = Path(path)
        self.block_values = block_values
        self.max_seconds = max_seconds
        self.history = None
        self.rows_written = 0
        self._file = None
        self._rows_per_block = 1
        self._line = ""
        self._last = 0.0
        self.error: OSError | None = None  # the first failed write (a full disk): no more tried

    def __repr__(self) -> str:
        return f"HistoryLog({self.path}, {self.rows_written} rows)"

    def on_train_start(self, net, dataset, history) -> None:
        self.history = history
        names = history.metric_names()
        self._rows_per_block = max(1, self.block_values // max(1, len(names)))
        self._line = ",".join(["%d"] + ["%.9g"] * len(names))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w")
            self._file.write(",".join(("epoch", *names)) + "\n")
            self._file.flush()
        except OSError as exc:
            self.error = exc
        self._last = time.monotonic()

    def on_epoch_end(self, epoch: int, history) -> None:
        pending = epoch + 1 - self.rows_written
        if pending >= self._rows_per_block or (
                pending and time.monotonic() - self._last >= self.max_seconds):
            self.append(epoch + 1)

    def on_train_end(self, result) -> None:
        self.close()

    def append(self, stop: int) -> None:
        """Write rows [rows_written, stop) and flush them to the operating system."""
        if self._file is None or self.error is not None or stop <= self.rows_written:
            return
        start = self.rows_written
        columns = [column for _, column in self.history.metric_items(start, stop)]
        values = np.column_stack(columns) if columns else np.empty((stop - start, 0))
        line = self._line
        text = "".join((line % (start + i, *row)).replace("nan", "") + "\n"
                       for i, row in enumerate(values.tolist()))
        try:
            self._file.write(text)
            self._file.flush()
        except OSError as exc:
            self.error = exc
            return
        self.rows_written = stop
        self._last = time.monotonic()

    def close(self) -> bool:
        """Append the complete rows left; True if the file holds every one of them."""
        if self.history is not None:
            self.append(int(self.history.n_rows))
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self.error = self.error or exc
            self._file = None
        return self.error is None and self.history is not None and (
            self.rows_written == int(self.history.n_rows))
