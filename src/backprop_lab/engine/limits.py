"""How much memory a run may plan to use, so that sizes too large fail with a message naming
them before anything is allocated (not with a MemoryError in the middle of a run)."""

from __future__ import annotations

import os

FALLBACK_BYTES = 2**34  # where the machine's memory cannot be read: 16 GiB


def memory_bytes() -> int:
    """This machine's physical memory (``FALLBACK_BYTES`` if unknown)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) or FALLBACK_BYTES
    except (ValueError, OSError, AttributeError):
        return FALLBACK_BYTES


def budget() -> int:
    """Bytes one run may plan for one structure: a quarter of the machine's memory."""
    return memory_bytes() // 4


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"
