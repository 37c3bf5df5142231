"""The MLflow UI over a sweep, in headless Chromium: check what it shows, save screenshots.

    python scripts/ui_screenshots.py --uri sqlite:///$PWD/mlflow.db --out docs/screenshots

Starts ``mlflow ui`` on 127.0.0.1 (a free port) over the store, opens the newest sweep's runs
page (the parent, expanded to its children), a child's metric charts (per-layer charts in
layer order), the parent's gradient-flow page in its artifact view (drawn inside MLflow's
iframe, its epoch slider moved, a value hovered), and the parent's description (the sweep's
table); each check raises
AssertionError naming what is missing. Needs playwright (``pip install -e '.[browser]'``) and
a Chromium: Debian's (``apt-get install chromium``) or ``$CHROMIUM``. The tests
(tests/test_browser_ui.py) call :func:`check_pages`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROLE_TAG = "backprop_lab.role"
TIMEOUT_MS = 60_000


def chromium_path() -> str:
    """$CHROMIUM, else Debian's chromium on PATH."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")
    if not found:
        raise FileNotFoundError("no Chromium: apt-get install chromium (or set $CHROMIUM)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(uri: str, log: Path, startup_s: float = 120) -> Iterator[str]:
    """``mlflow ui`` on 127.0.0.1 over ``uri`` while the block runs; yields its base URL."""
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow ui did not start; its log: {log}")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, 15)  # the server and its workers, started by us
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def sweep_runs(uri: str, experiment: str = "backprop-lab", sweep: str | None = None):
    """(experiment id, the sweep's parent (default: the newest), its children)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    parents = ([client.get_run(sweep)] if sweep else client.search_runs(
        [exp.experiment_id], f"tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"], max_results=1))
    if not parents:
        raise ValueError(f"no sweep in experiment {experiment!r} of {uri}")
    parent = parents[0]
    children = client.search_runs([exp.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  max_results=1000)
    return exp.experiment_id, parent, children


SORT_METRIC = "vanishing/log10_ratio_init"


def sorted_runs_url(base: str, experiment_id: str, metric: str = SORT_METRIC) -> str:
    """The runs table sorted by ``metric``, lowest first (the most vanished gradient on top)."""
    from urllib.parse import quote

    return (f"{base}/#/experiments/{experiment_id}/runs"
            f"?orderByKey={quote(f'metrics.`{metric}`')}&orderByAsc=true")


def _close_assistant(page) -> None:
    """The UI's assistant panel (it only answers when asked) takes a third of the page."""
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Close").first.click(timeout=2000)


def check_gradient_flow(page, base: str, experiment_id: str, parent, out: Path) -> None:
    """The parent's ``gradient_flow.html`` in its artifact view: MLflow renders it in an iframe,
    where its plots must be drawn, the epoch slider must move the plotted epoch, and a hover
    must show a value. Screenshots: gradient_flow_mlflow.png, gradient_flow_hover.png."""
    page.goto(f"{base}/#/experiments/{experiment_id}/runs/{parent.info.run_id}/artifacts")
    _close_assistant(page)
    page.get_by_text("gradient_flow.html", exact=True).first.click()
    frame = page.frame_locator("iframe").first
    frame.locator('body[data-ready="1"]').wait_for()  # the page sets it once all is drawn
    title = frame.locator("#profile .gtitle")
    assert "at epoch 0" in title.text_content(), title.text_content()  # SVG text
    assert frame.locator("#profile .scatterlayer .trace").count() >= 2, "no profile lines"
    assert frame.locator("#heatmaps .heatmaplayer image, #heatmaps .hm image").count() >= 1, \
        "no heat map"
    page.screenshot(path=str(out / "gradient_flow_mlflow.png"))
    # The slider to its end: the profile is redrawn at the last epoch.
    epochs = frame.locator("body").evaluate("() => window.gradientFlow.epochs")
    frame.locator("#epoch").fill(str(len(epochs) - 1))
    frame.locator("#profile .gtitle", has_text=f"at epoch {epochs[-1]}").wait_for()
    assert frame.locator("#epoch-label").inner_text() == f"epoch {epochs[-1]}"
    # A hover over the first point of the first line shows its value.
    frame.locator("#profile").evaluate("e => e.scrollIntoView({block: 'center'})")
    point = frame.locator("#profile .scatterlayer .trace .points path").first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    for dx in (1, 0):  # Plotly hovers on mouse moves
        page.mouse.move(box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2)
    hover = frame.locator("#profile .hoverlayer .hovertext").first
    hover.wait_for()
    text = hover.text_content()
    assert re.search(r"layer 1: .+ = \d", text), text
    page.screenshot(path=str(out / "gradient_flow_hover.png"))


def check_pages(base: str, experiment_id: str, parent, children, out: Path,
                child=None) -> dict[str, float]:
    """Open the pages, check them, save screenshots into ``out``; seconds per page."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    child = child or children[0]
    seconds = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(),
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.set_default_timeout(TIMEOUT_MS)

            # 1. The runs page: the parent, expanded, lists its children.
            tic = time.perf_counter()
            page.goto(f"{base}/#/experiments/{experiment_id}/runs")
            row = page.locator(".ag-row", has_text=parent.info.run_name[:20]).first
            row.wait_for()
            _close_assistant(page)
            row.locator("button").first.click()
            for run in children[:10]:
                page.get_by_text(run.info.run_name, exact=True).first.wait_for()
            page.screenshot(path=str(out / "runs_page.png"))
            seconds["runs page"] = time.perf_counter() - tic

            # 2. A child's metric charts: per-layer charts in layer order.
            tic = time.perf_counter()
            page.goto(f"{base}/#/experiments/{experiment_id}/runs/{child.info.run_id}"
                      "/model-metrics")
            search = page.get_by_placeholder("Search metric charts")
            search.wait_for()
            search.fill("grad_weight_ratio")
            cards = page.locator('[data-testid="experiment-view-compare-runs-card"]')
            cards.first.wait_for()
            page.locator("canvas, svg.main-svg").first.wait_for()
            titles = [t.split("\n")[0] for t in cards.all_inner_texts()]
            layer_titles = [t for t in titles if t.startswith("layer_")]
            assert layer_titles and layer_titles[0] == "layer_01", titles
            sections, current = [], []  # the cards of each section, in page order
            for title in layer_titles:
                if title == "layer_01" and current:
                    sections.append(current)
                    current = []
                current.append(title)
            sections.append(current)
            for cards_of_section in sections:  # layer_01, layer_02, ... in layer order
                assert cards_of_section == [f"layer_{l:02d}" for l in
                                            range(1, len(cards_of_section) + 1)], titles
            page.screenshot(path=str(out / "run_metric_charts.png"))
            search.fill("grad_weight_ratio_log10")  # the same quantity, readable (log10)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "run_metric_charts_log10.png"))
            seconds["metric charts"] = time.perf_counter() - tic

            # 3. The parent's gradient-flow page, in MLflow's artifact view (an iframe).
            tic = time.perf_counter()
            check_gradient_flow(page, base, experiment_id, parent, out)
            seconds["gradient flow page"] = time.perf_counter() - tic

            # 4. The parent's description: the sweep's table of children.
            tic = time.perf_counter()
            page.goto(f"{base}/#/experiments/{experiment_id}/runs/{parent.info.run_id}")
            page.get_by_text("Description").first.wait_for()
            table = page.locator("table", has_text="outcome").first
            table.wait_for()
            note = parent.data.tags.get("mlflow.note.content", "")
            listed = [r for r in children if r.info.run_id in note]
            assert listed, "the parent's description lists none of its children"
            for run in listed[:10]:
                assert table.get_by_text(run.info.run_name).count() >= 1, run.info.run_name
            more = page.get_by_text("Show more")
            if more.count():
                more.first.click()
            page.get_by_text("Description").first.scroll_into_view_if_needed()
            page.screenshot(path=str(out / "parent_description.png"))
            seconds["parent description"] = time.perf_counter() - tic

            # 5. The runs table sorted by how much the gradient vanished at initialization
            #    (the metric is set in the page's address, as the "Sort" menu sets it).
            tic = time.perf_counter()
            page.goto(sorted_runs_url(base, experiment_id))
            page.get_by_text(f"Sort: {SORT_METRIC}").first.wait_for()
            ranked = sorted((r for r in children if SORT_METRIC in r.data.metrics),
                            key=lambda r: r.data.metrics[SORT_METRIC])[:10]
            for run in ranked:
                page.get_by_text(run.info.run_name, exact=True).first.wait_for()
            names = [page.get_by_text(run.info.run_name, exact=True).first for run in ranked]
            rows_y = [name.bounding_box()["y"] for name in names]
            assert rows_y == sorted(rows_y), [r.info.run_name for r in ranked]
            page.screenshot(path=str(out / "runs_sorted_by_vanishing.png"))
            seconds["runs sorted"] = time.perf_counter() - tic
        finally:
            browser.close()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", required=True, help="tracking URI of a store with a sweep")
    parser.add_argument("--out", type=Path, required=True, help="folder for the screenshots")
    parser.add_argument("--experiment", default="backprop-lab")
    parser.add_argument("--sweep", default=None, help="parent run id (default: the newest)")
    parser.add_argument("--child", default=None,
                        help="run id of the child whose charts to show (default: the first "
                        "that finished)")
    args = parser.parse_args(argv)
    experiment_id, parent, children = sweep_runs(args.uri, args.experiment, args.sweep)
    # A diverged run's charts have nothing finite to draw: show a finished one.
    finished = [r for r in children if r.info.status == "FINISHED"] or children
    child = next((r for r in children if r.info.run_id == args.child), None) or (
        finished[0])
    with mlflow_ui(args.uri, args.out / "mlflow-ui.log") as base:
        seconds = check_pages(base, experiment_id, parent, children, args.out, child)
    for page, s in seconds.items():
        print(f"{page}: {s:.1f} s")
    print(f"screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
