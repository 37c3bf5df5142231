"""Keep the analysis notebooks reviewable in git: strip outputs before committing.

    python -m backprop_lab.analysis.notebooks analysis/*.ipynb

Removes outputs, execution counts and per-session metadata (timings, the interpreter version),
keeps the cells' ids and tags (the
``parameters`` tag marks the cell a test or papermill replaces). Exit status 1 when a file was
changed, so it can serve as a pre-commit check.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

_SESSION_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def strip_outputs(path: str | Path) -> bool:
    """Strip one notebook in place; return whether it changed."""
    path = Path(path)
    before = path.read_text(encoding="utf-8")
    notebook = nbformat.reads(before, as_version=4)
    for cell in notebook.cells:
        for key in _SESSION_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    notebook.metadata.pop("widgets", None)
    # Running a notebook fills in the interpreter's version etc.; keep only the language.
    language = notebook.metadata.get("language_info", {}).get("name")
    if language:
        notebook.metadata["language_info"] = {"name": language}
    after = nbformat.writes(notebook) + "\n"
    if after != before:
        path.write_text(after, encoding="utf-8")
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    changed = [p for p in paths if strip_outputs(p)]
    for path in changed:
        print(f"stripped {path}")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
