"""The process that builds a sweep's gradient-flow page (analysis/gradient_flow.py).

The page's computed conclusion needs pandas (analysis/summary.py), whose import takes 0.4-0.9 s
on this project's machines: longer than the flagship sweep's whole tracking budget. So the
launching process starts this worker when the sweep starts (``on_multirun_start``); the worker
imports pandas on the other core while the jobs train, and at the end of the sweep it only
builds the page (0.1-0.2 s for the flagship) from the records the jobs left in their folders;
the launching process ends it once it has answered (its own exit would tear pandas down for
nothing) and when the sweep is interrupted. It also exits when its stdin closes.
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
            # stderr is the sweep's own: a warning shows there, and a pipe nobody reads
            # could fill up and stall the worker.
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.seconds: float | None = None  # what building the page took in the worker

    def build(self, folder: Path, sweep_id: str | None, title: str,
              timeout: float = 600) -> Path | None:
        """The page of the sweep in ``folder`` (None: no job left a record there). Returns
        on the worker's answer, without waiting for it to exit (:meth:`close` ends it)."""
        import select

        request = json.dumps({"folder": str(folder), "sweep_id": sweep_id, "title": title})
        try:
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
        except OSError:  # it died before the request: say why below
            pass
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise RuntimeError(f"the page worker took more than {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line.strip():
            self.close()
            raise RuntimeError(f"the page worker ended without an answer (exit "
                               f"{self.proc.returncode}; its error is printed above)")
        reply = json.loads(line)
        if reply.get("error"):
            raise RuntimeError(reply["error"])
        self.seconds = reply.get("seconds")
        return Path(reply["path"]) if reply["path"] else None

    def close(self) -> None:
        """End the worker: it has answered (its exit would only tear pandas down) or the
        sweep was interrupted."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
