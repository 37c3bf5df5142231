"""The process that builds a sweep's gradient-flow page (analysis/gradient_flow.py).

The page's computed conclusion needs pandas (analysis/summary.py), whose import takes 0.4-0.9 s
on this project's machines: longer than the flagship sweep's whole tracking budget. So the
launching process starts this worker when the sweep starts (``on_multirun_start``); the worker
imports pandas on the other core while the jobs train, and at the end of the sweep it only
builds the page (about 0.05 s for the flagship) from the records the jobs left in their
folders. It exits when asked, or when its stdin closes (the sweep ended without asking).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


class PageWorker:
    """``python -m backprop_lab.analysis.gradient_flow --serve`` as a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backprop_lab.analysis.gradient_flow", "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def build(self, folder: Path, sweep_id: str | None, title: str,
              timeout: float = 600) -> Path | None:
        """The page of the sweep in ``folder`` (None: no job left a record there)."""
        request = json.dumps({"folder": str(folder), "sweep_id": sweep_id, "title": title})
        try:
            out, err = self.proc.communicate(request + "\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise RuntimeError(f"the page worker took more than {timeout:.0f} s") from None
        if self.proc.returncode != 0 or not out.strip():
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the page worker failed (exit {self.proc.returncode}): {last}")
        path = json.loads(out.strip().splitlines()[-1])["path"]
        return Path(path) if path else None

    def close(self) -> None:
        """Stop the worker if it still runs (an interrupted sweep)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
