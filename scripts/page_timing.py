"""Size and time to first render of self-contained HTML pages in headless Chromium.

    python scripts/page_timing.py reports/x/gradient_flow.html [more.html ...] [--repeats 5]
        [--screenshot out.png]

For each page: its size, and the median over ``--repeats`` fresh loads (a new browser page
each, from a file: nothing is fetched) of the time from navigation start until the page is
interactive, i.e. until ``document.body.dataset.ready == "1"`` (the gradient-flow page sets it
once every plot is drawn and the controls are wired) or, for pages that do not set it, until
the first Plotly plot is in the document or Bokeh has rendered its root views. Needs
playwright and Chromium (the ``browser`` extra; scripts/ui_screenshots.py finds Chromium).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

READY = """() => document.body && (document.body.dataset.ready === "1"
    || (!document.getElementById("gf-data")
        && (!!document.querySelector(".main-svg")
            || (window.Bokeh && Bokeh.index && Object.keys(Bokeh.index).length > 0))))"""


def time_pages(paths: list[Path], repeats: int = 5, screenshot: Path | None = None,
               viewport: tuple[int, int] = (1400, 1000)) -> dict[Path, dict]:
    """{path: {"mb": size, "seconds": [each load], "median": ...}}."""
    from playwright.sync_api import sync_playwright
    from ui_screenshots import chromium_path

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(),
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            for path in paths:
                times = []
                for _ in range(repeats):
                    page = browser.new_page(viewport={"width": viewport[0],
                                                      "height": viewport[1]})
                    page.goto(path.resolve().as_uri(), wait_until="commit")
                    page.wait_for_function(READY, timeout=60_000, polling=10)
                    times.append(page.evaluate(
                        "() => (window.gradientFlow && window.gradientFlow.readyAt)"
                        " || performance.now()") / 1000)
                    marks = page.evaluate("() => window.gradientFlow && window.gradientFlow.marks")
                    if marks:
                        print({k: round(v) for k, v in marks.items()})
                    if screenshot is not None and len(times) == repeats:
                        page.screenshot(path=str(screenshot), full_page=True)
                    page.close()
                out[path] = {"mb": path.stat().st_size / 1e6, "seconds": times,
                             "median": statistics.median(times)}
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", type=Path, nargs="+")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="save a full-page screenshot of the last page's last load")
    args = parser.parse_args(argv)
    for path, r in time_pages(args.pages, args.repeats, args.screenshot).items():
        each = ", ".join(f"{s:.2f}" for s in r["seconds"])
        print(f"{path}: {r['mb']:.2f} MB, interactive after {r['median']:.2f} s "
              f"(median of {len(r['seconds'])}: {each})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
