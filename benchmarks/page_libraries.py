"""The plotting libraries' floor for an offline page: size and time to first render of one
trivial plot with each library's JavaScript inlined, in headless Chromium.

    python benchmarks/page_libraries.py [--repeats 5]

Pages (written to a temporary folder): plotly.js full bundle (the plotly package's
plotly.min.js, what ``write_html(include_plotlyjs=True)`` inlines), plotly.js cartesian bundle
(what the gradient-flow page inlines, installed by the Makefile), and Bokeh with
``resources=INLINE`` (only if bokeh is installed: it is not a dependency). Timed by
scripts/page_timing.py, pages interleaved within each repeat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "scripts"))

PLOTLY_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><div id="p"></div>
<script>{js}</script><script>
Plotly.newPlot("p", [{{y: [1, 3, 2], type: "scatter"}}]).then(() => {{
  window.gradientFlow = {{readyAt: performance.now()}}; document.body.dataset.ready = "1"; }});
</script></body></html>"""


def pages(folder: Path) -> dict[str, Path]:
    import importlib.util

    from backprop_lab.analysis.gradient_flow import CARTESIAN_JS

    out = {}
    spec = importlib.util.find_spec("plotly")
    full = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    for name, js in (("plotly.js full", full), ("plotly.js cartesian", CARTESIAN_JS)):
        if js.is_file():
            path = folder / f"{name.replace(' ', '_')}.html"
            path.write_text(PLOTLY_PAGE.format(js=js.read_text(encoding="utf-8")),
                            encoding="utf-8")
            out[name] = path
    try:
        from bokeh.embed import file_html
        from bokeh.plotting import figure
        from bokeh.resources import INLINE
    except ImportError:
        print("bokeh is not installed: its page is left out")
    else:
        fig = figure(height=300, width=500)
        fig.line([0, 1, 2], [1, 3, 2])
        path = folder / "bokeh.html"
        path.write_text(file_html(fig, INLINE, "bokeh"), encoding="utf-8")
        out["bokeh (INLINE)"] = path
    return out


def main(argv: list[str] | None = None) -> int:
    from page_timing import time_pages

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        found = pages(Path(folder))
        times: dict[str, list[float]] = {name: [] for name in found}
        for _ in range(args.repeats):
            result = time_pages(list(found.values()), repeats=1)
            for name, path in found.items():
                times[name] += result[path]["seconds"]
        for name, path in found.items():
            print(f"{name}: {path.stat().st_size / 1e6:.2f} MB, first render after "
                  f"{statistics.median(times[name]):.2f} s (median of {args.repeats}: "
                  + ", ".join(f"{s:.2f}" for s in times[name]) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
