"""The sweep's folder, made (or checked) before the sweep's parent run exists.

Hydra's sweeper creates ``hydra.sweep.dir`` only once it launches the jobs, after the
launching process has opened the parent run: a folder that cannot be made (a read-only disk,
a path through a file, no permission) used to end in a long traceback with the parent left
FAILED. :func:`prepare_sweep_folder` makes it first and proves it writable.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


class SweepFolderError(OSError):
    """The sweep's folder cannot be created or written."""


def prepare_sweep_folder(folder: Path) -> None:
    """Create ``folder`` (with its parents) and write a probe file into it; raise
    :class:`SweepFolderError` naming the folder and the cause otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        cause = exc.strerror or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(folder) else ""
        raise SweepFolderError(
            f"the sweep folder hydra.sweep.dir={folder} cannot be created or written: "
            f"{cause}{where}. Choose another: hydra.sweep.dir=PATH") from None
