"""The gradient-flow page: one self-contained, interactive HTML file (``gradient_flow.html``).

    python -m backprop_lab.analysis.gradient_flow            # the latest sweep, default store
    python -m backprop_lab.analysis.gradient_flow --sweep RUN_ID --out reports/x
    python -m backprop_lab.analysis.gradient_flow --run RUN_ID --no-log --out /tmp/page

It shows, for the runs of a sweep (or one run): the computed conclusion
(:func:`backprop_lab.analysis.summary.conclusions`), a table of how many decades of the
output layer's gradient norm reach layer 1 at initialization and after training, the layer
profile of a chosen per-layer quantity (log scale) at the epoch of a slider (with play) beside
mean-field theory at initialization (dashed), a layer x epoch heat map per run on one shared
log colour scale, and the per-layer histograms (weights, gradients, activations, delta) at
that epoch. Hover gives every value.

The page carries everything it needs: plotly.js (from the pinned ``plotly`` package, read as a
file: its Python side is not imported) and the data, both gzip'd and base64-encoded, inflated
by the browser (``DecompressionStream``). It fetches nothing, so it opens from a file offline
and inside MLflow's artifact view (an iframe sandboxed to scripts, loaded from a blob).
Epochs beyond :data:`flow_records.MAX_EPOCHS` per run are log-spaced, and a page with many
runs keeps fewer (:data:`VALUE_BUDGET`); the page says how many it shows.

Where it is written: a single run's job folder and artifacts (harness/ending.py); a sweep's
folder and its parent run's artifacts at the end of the sweep (harness/callbacks.py), from the
records its jobs left (analysis/flow_records.py); the report's folder
(analysis/report.py); and wherever this command is pointed.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import html
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from backprop_lab.analysis.flow_records import (
    LAYER_METRICS,
    PAGE_METRICS,
    SHARE_METRICS,
    load_record,
    make_record,
    thin,
)
from backprop_lab.analysis.flow_tables import conclusions_of, records_from_tables
from backprop_lab.contract import FLOW_RECORD_FILE, GRADIENT_FLOW_PAGE

#: About this many plotted values (runs x layers x metrics x epochs) at most on one page: the
#: 36-run study then keeps about 130 of its 501 epochs per run.
VALUE_BUDGET = 450_000
DEFAULT_METRIC = "delta_std"
THEORY_METRICS = ("delta_std", "preact_var")
LABELS = {
    "delta_std": "std of δ (back-propagated error)",
    "grad_norm": "‖dL/dW‖ (gradient norm)",
    "grad_weight_ratio": "‖dL/dW‖ / ‖W‖",
    "update_ratio": "‖ΔW‖ / ‖W‖ (update ratio)",
    "act_std": "std of activations",
    "saturation": "saturated share",
    "dead_fraction": "dead-unit share",
    "preact_var": "variance of pre-activations",
}
#: Run columns a sweep may vary besides the activation, offered as filters on the page.
#: (The init is part of a run's label, which colours it.)
FILTER_KEYS = ("depth", "width", "seed", "lr", "optimizer", "dataset")
_JS = Path(__file__).with_name("gradient_flow.js")
_TEMPLATE = Path(__file__).with_name("gradient_flow_template.html")


# -- plotly.js -------------------------------------------------------------------------------
#: plotly.js's cartesian bundle (scatter and heat maps), installed by the Makefile from npm.
CARTESIAN_JS = Path(sys.prefix) / "share" / "backprop-lab" / "plotly-cartesian.min.js"
ENV_PLOTLY_JS = "BACKPROP_LAB_PLOTLY_JS"


def plotly_js_path() -> Path:
    """The plotly.js the page inlines: ``$BACKPROP_LAB_PLOTLY_JS`` if set, else the cartesian
    bundle the Makefile installs (:data:`CARTESIAN_JS`, 1.5 MB), else the full bundle of the
    installed ``plotly`` package (4.8 MB; found without importing plotly's Python side)."""
    import importlib.util

    if os.environ.get(ENV_PLOTLY_JS):
        path = Path(os.environ[ENV_PLOTLY_JS])
        if not path.is_file():
            raise FileNotFoundError(f"{ENV_PLOTLY_JS}={path}: no such file")
        return path
    if CARTESIAN_JS.is_file():
        return CARTESIAN_JS
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed: pip install plotly "
                                "(a dependency of backprop-lab)")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: reinstall plotly")
    return path


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "backprop-lab"


def plotly_js_gz_b64() -> str:
    """:func:`plotly_js_path` gzip'd (level 9) and base64-encoded: the cartesian bundle's 1.5 MB
    as 0.6 MB of text (the full bundle's 4.8 MB as 2.0 MB). Compressing takes 0.2-0.8 s, so
    the result is cached per file (by name, size and modification time) in
    ``$XDG_CACHE_HOME/backprop-lab``; an unwritable cache only costs the time."""
    path = plotly_js_path()
    stat = path.stat()
    cached = _cache_dir() / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}.js.gz.b64"
    try:
        return cached.read_text(encoding="ascii")
    except OSError:
        pass
    text = base64.b64encode(gzip.compress(path.read_bytes(), 9, mtime=0)).decode("ascii")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cached.parent, delete=False,
                                         encoding="ascii") as tmp:
            tmp.write(text)
        os.replace(tmp.name, cached)
    except OSError:
        pass
    return text


# -- the page --------------------------------------------------------------------------------
def _fit_budget(records: list[dict], budget: int) -> tuple[list[dict], int, int]:
    """Thin every record's epochs evenly (they are log-spaced already) so that the page
    holds at most ``budget`` values; returns (records, epochs kept per run at most, epochs
    of the longest run)."""
    per_epoch = sum(len(r["values"]) * (r.get("n_layers") or 1) for r in records) or 1
    most = max((len(r["epochs"]) for r in records), default=0)
    cap = max(20, budget // per_epoch)
    longest = max((r["end_epochs"][1] + 1 for r in records), default=0)
    if most <= cap:
        return records, most, longest
    out = []
    for r in records:
        keep = thin(r["epochs"], cap)
        out.append({**r, "epochs": [r["epochs"][i] for i in keep],
                    "values": {m: [v[i] for i in keep] for m, v in r["values"].items()}})
    return out, cap, longest


def _filters(records: list[dict]) -> list[dict]:
    """The run columns that differ between records (besides the activation), with their
    values; the page starts on the deepest network when depths differ."""
    out = []
    for key in FILTER_KEYS:
        values = sorted({r.get(key) for r in records if r.get(key) is not None},
                        key=lambda v: (isinstance(v, str), v))
        if len(values) > 1:
            out.append({"key": key, "values": values,
                        "default": max(values) if key == "depth" else None})
    return out


def _json_number(value):
    """numpy scalars in the records (from pandas tables) as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {value!r}")


def _markdown_inline(text: str) -> str:
    """The conclusions' markdown (``**bold**``, `` `code` ``) as HTML."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def render_page(records: Sequence[dict], *, title: str, subtitle: str = "",
                conclusions: Sequence[str] = (), budget: int = VALUE_BUDGET) -> str:
    """The page's HTML for ``records`` (analysis/flow_records.py), with the computed
    ``conclusions`` (markdown lines) on top."""
    if not records:
        raise ValueError("no run with per-layer diagnostics to draw (diagnostics=false?)")
    shown, kept, longest = _fit_budget(list(records), budget)
    present = [m for m in PAGE_METRICS if any(m in r["values"] for r in shown)]
    hist_epochs = sorted({e for r in shown for h in r.get("hist", {}).values()
                          for e in h["epochs"]})
    notes = []
    if kept < longest:
        notes.append(f"Epochs: {kept} of {longest} per run are drawn, log-spaced (every epoch "
                     "at the start, sparser later; the first and the last always).")
    if hist_epochs:
        notes.append("Histograms (64 bins over each layer's own range) were recorded at "
                     f"epochs {', '.join(map(str, hist_epochs[:12]))}"
                     + (" ..." if len(hist_epochs) > 12 else "")
                     + "; the slider shows the latest one at or before its epoch.")
    notes.append("δ = dL/dz, the error back-propagated to a layer's pre-activations. "
                 "Dashed: mean-field theory at initialization (delta_std anchored at the top "
                 "hidden layer; preact_var: the variance map q^l).")
    data = {
        "runs": shown,
        "metrics": [{"key": m, "label": LABELS.get(m, m), "share": m in SHARE_METRICS}
                    for m in present],
        "default_metric": DEFAULT_METRIC if DEFAULT_METRIC in present else present[0],
        "theory_metrics": list(THEORY_METRICS),
        "filters": _filters(shown),
    }
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False,
                         default=_json_number).encode()
    data_b64 = base64.b64encode(gzip.compress(payload, 6, mtime=0)).decode("ascii")
    items = "".join(f"<li>{_markdown_inline(line)}</li>" for line in conclusions)
    return _TEMPLATE.read_text(encoding="utf-8").format(
        title=html.escape(title), subtitle=html.escape(subtitle),
        conclusions=f"<ul class='conclusions'>{items}</ul>" if items else "",
        notes="".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes),
        plotly=plotly_js_gz_b64(), data=data_b64, script=_JS.read_text(encoding="utf-8"),
    )




def write_page(records: Sequence[dict], out: Path, *, title: str, subtitle: str = "",
               conclusions: Sequence[str] | None = None) -> Path:
    """Render the page of ``records`` into ``out`` (a folder: ``out/gradient_flow.html``, or
    a path ending in .html); the conclusions are computed when not given."""
    path = out if out.suffix == ".html" else out / GRADIENT_FLOW_PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = conclusions_of(records) if conclusions is None else conclusions
    path.write_text(render_page(records, title=title, subtitle=subtitle, conclusions=lines),
                    encoding="utf-8")
    return path


def sweep_subtitle(records: Sequence[dict], how: str) -> str:
    """``"36 runs, read from the store"``."""
    n = len(records)
    return f"{n} run{'s' if n != 1 else ''}, {how}"


def write_sweep_page(sweep, out: Path) -> Path:
    """The page of a loaded :class:`.loading.SweepData` (its histograms are loaded here)."""
    from backprop_lab.analysis.histograms import load_histograms

    histograms = load_histograms(sweep.uri, sweep.runs)
    records = records_from_tables(sweep.runs, sweep.histories, histograms)
    name = sweep.sweep_name if sweep.sweep_id else "all runs of the experiment"
    return write_page(records, out, title=str(name),
                      subtitle=sweep_subtitle(records, "read from the store"),
                      conclusions=None)


def records_in_folder(folder: Path, sweep_id: str | None = None) -> list[dict]:
    """The records the jobs of a sweep left in its folder (``<job>/gradient_flow.json``),
    in job order; ``sweep_id``: only that sweep's."""
    found = []
    for path in folder.glob(f"**/{FLOW_RECORD_FILE}"):
        try:
            record = load_record(path)
        except (OSError, ValueError):
            continue
        if sweep_id is None or record.get("sweep_id") == sweep_id:
            found.append(record)
    return sorted(found, key=lambda r: (r.get("job_num") is None, r.get("job_num") or 0))


def sweep_page(folder: Path, sweep_id: str | None, title: str) -> Path | None:
    """The page of a sweep that just ended, from its jobs' records in ``folder``, written to
    ``folder/gradient_flow.html``; None when no job left a record there."""
    records = records_in_folder(folder, sweep_id)
    if not records:
        return None
    how = "drawn at the end of the sweep from its jobs' records"
    return write_page(records, folder, title=title, subtitle=sweep_subtitle(records, how))


def _warm_up() -> None:
    """Draw the conclusions of two made-up runs, discarding them: the first call imports
    pandas and the theory's quadrature and runs pandas's first-call paths (0.3-1 s)."""
    import numpy as np

    rows = np.arange(3)
    layers = {m: np.full((3, 3), 0.5) for m in LAYER_METRICS}
    records = [make_record({"id": a, "name": a, "activation": a, "init": "auto", "depth": 2,
                            "n_layers": 3, "width": 4, "sizes": [2, 4, 4, 1], "seed": 0,
                            "outcome": "finished", "final": {"val/accuracy": 0.5}},
                           rows, layers) for a in ("tanh", "relu")]
    conclusions_of(records)
    render_page(records, title="warm-up")


def serve() -> int:
    """The sweep's page worker (harness/page_worker.py): import what the page needs now,
    while the sweep's jobs train, then read one request (JSON: folder, sweep_id, title) from
    stdin, build the sweep's page and answer with its path (JSON) on stdout."""
    import signal

    # A Ctrl-C reaches the whole process group: the sweep stops itself and then closes this
    # worker's stdin (its end of file ends it), so the worker has nothing to say about it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):  # idle CPU time first: behind the training and the writer
        os.nice(19)
    _warm_up()
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the sweep ended without asking (interrupted, or no tracking)
    import time

    tic = time.perf_counter()
    request = json.loads(line)
    try:
        path = sweep_page(Path(request["folder"]), request.get("sweep_id"), request["title"])
    except Exception as exc:  # noqa: BLE001 - the sweep says why, and goes on
        print(json.dumps({"path": None, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps({"path": str(path) if path else None,
                      "seconds": round(time.perf_counter() - tic, 3)}), flush=True)
    return 0


# -- the command -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backprop_lab.analysis.gradient_flow",
        description="Render the interactive gradient-flow page (gradient_flow.html) of a sweep "
        "or a run already in a store, and attach it to that run.")
    parser.add_argument("--uri", default=None, help="MLflow tracking URI (default: "
                        "$MLFLOW_TRACKING_URI, else sqlite:///<repo root>/mlflow.db)")
    parser.add_argument("--experiment", default=None, help="experiment name (default: any)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--sweep", default="latest",
                       help="parent run id of a sweep (default: the latest sweep)")
    group.add_argument("--run", default=None, help="one run's id (a job or a single run)")
    group.add_argument("--folder", type=Path, default=None,
                       help="a tracked sweep's folder (multirun/DATE/TIME): the page of the "
                       "records its jobs left, without a store; written there")
    group.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="folder to write gradient_flow.html into (default: .)")
    parser.add_argument("--no-log", action="store_true",
                        help="do not attach the page to the run in the store")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve()
    if args.folder is not None:
        path = sweep_page(args.folder, None, args.folder.resolve().name)
        if path is None:
            print(f"error: no {FLOW_RECORD_FILE} under {args.folder}", file=sys.stderr)
            return 2
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
        return 0
    from mlflow import MlflowClient

    from backprop_lab.analysis.loading import SweepData, load_histories, load_sweep, runs_table

    try:
        if args.run:
            client = MlflowClient(tracking_uri=args.uri or None)
            run = client.get_run(args.run)
            runs = runs_table([run])
            uri = client.tracking_uri
            sweep = SweepData(uri, [run.info.experiment_id], None, run.info.run_name, runs,
                              load_histories(client, [run], runs))
        else:
            sweep = load_sweep(args.uri, args.experiment, args.sweep)
    except Exception as exc:  # noqa: BLE001 - MLflow raises store-specific types
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if sweep.runs.empty:
        print(f"error: no runs found in {sweep.uri}", file=sys.stderr)
        return 2
    from backprop_lab.analysis.histograms import load_histograms

    records = records_from_tables(sweep.runs, sweep.histories,
                                  load_histograms(sweep.uri, sweep.runs))
    if not records:
        print("error: the runs have no per-layer history (diagnostics=false?)", file=sys.stderr)
        return 2
    title = sweep.sweep_name or str(records[0]["name"])
    path = write_page(records, args.out, title=title,
                      subtitle=sweep_subtitle(records, "read from the store"))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    target = args.run or sweep.sweep_id
    if args.no_log or target is None:
        return 0
    MlflowClient(tracking_uri=sweep.uri).log_artifact(target, str(path))
    print(f"logged {path.name} to run {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
