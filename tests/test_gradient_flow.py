"""The gradient-flow page's records (analysis/flow_records.py) and page (analysis/gradient_flow.py):
epochs kept, values encoded, histograms packed, theory anchored, and a page that carries all it
needs (nothing to fetch) within its value budget."""

from __future__ import annotations

import base64
import gzip
import json
import re

import numpy as np
import pytest

from backprop_lab.analysis import flow_records as fr
from backprop_lab.analysis.gradient_flow import render_page, write_page
from backprop_lab.engine.datasets import load_dataset
from backprop_lab.engine.network import MLP
from backprop_lab.engine.optimizers import make_optimizer
from backprop_lab.engine.training import train


@pytest.mark.parametrize("rows", [1, 7, 200, 201, 1001, 100_001])
def test_sample_epochs_keeps_all_that_fit_else_log_spaced_with_both_ends(rows):
    kept = fr.sample_epochs(rows, 200)
    assert kept[0] == 0 and kept[-1] == rows - 1
    assert np.all(np.diff(kept) > 0)
    if rows <= 200:
        assert kept.tolist() == list(range(rows))
    else:
        assert 200 <= kept.size <= 210
        steps = np.diff(kept)
        assert steps[0] == 1 and steps[-1] >= steps[0]  # dense at the start, sparse at the end
        # log-spaced: the gap grows with the epoch, at most about 1/20th of it at the end
        assert steps[-1] <= max(1, 0.05 * rows)
        if rows > 1000:
            assert steps[-1] > 10


def test_encode_gives_log10_or_shares_and_none_where_no_log_exists():
    values = np.array([[1e-12, 0.0, np.nan], [10.0, -1.0, 0.5]])
    assert fr.encode("grad_norm", values) == [[-12.0, None, None], [1.0, None, -0.301]]
    assert fr.encode("saturation", values) == [[0.0, 0.0, None], [10.0, -1.0, 0.5]]


def _trained(epochs: int = 30, histogram_every: int = 10):
    ds = load_dataset("spiral", n_samples=60, rng=np.random.default_rng(0))
    net = MLP([ds.n_features, 16, 16, 16, 1], activation="sigmoid", init="lecun",
              rng=np.random.default_rng(0))
    result = train(net, ds, make_optimizer("gd", lr=0.5), epochs=epochs,
                   histogram_every=histogram_every)
    meta = {"id": "r1", "name": "sigmoid", "label": "sigmoid (lecun)", "activation": "sigmoid",
            "init": "lecun", "depth": 3, "n_layers": 4, "width": 16, "sizes": net.sizes,
            "seed": 0, "input_var": float(np.mean(ds.X_train ** 2)), "outcome": "finished"}
    return result, meta


def test_a_record_from_a_run_in_memory_holds_its_values_theory_and_histograms():
    result, meta = _trained()
    record = fr.record_from_history(result.history, result.histograms, meta)
    rows = result.history.n_rows
    assert record["epochs"] == list(range(rows)) and record["end_epochs"] == [0, rows - 1]
    grad = result.history.layers["grad_norm"]
    assert record["values"]["grad_norm"][5] == pytest.approx(np.log10(grad[5]), abs=6e-4)
    assert record["ends"]["grad_norm"] == [grad[0].tolist(), grad[rows - 1].tolist()]
    # mean field's delta_std is anchored at the top hidden layer (L-1) and falls below it by
    # the predicted factors; the output layer has no prediction.
    delta0 = result.history.layers["delta_std"][0]
    theory = record["theory"]["delta_std"]
    assert theory[2] == pytest.approx(delta0[2]) and theory[3] is None
    assert theory[0] < theory[1] < theory[2]
    assert len(record["theory"]["preact_var"]) == 4
    # histograms: every kind, epochs 0, 10, 20, 30, counts scaled to 255 at each one's mode
    assert set(record["hist"]) == {"weights", "grads", "activations", "deltas"}
    deltas = record["hist"]["deltas"]
    assert deltas["epochs"] == [0, 10, 20, 30]
    counts = np.frombuffer(base64.b64decode(deltas["counts"]), dtype=np.uint8)
    counts = counts.reshape(4, 4, 64)
    original = {(h.epoch, h.layer): h for h in result.histograms if h.kind == "deltas"}
    for i, epoch in enumerate(deltas["epochs"]):
        for l in range(1, 5):
            h = original[(epoch, l)]
            assert counts[i, l - 1].argmax() == h.counts.argmax()
            assert counts[i, l - 1].max() == 255
            assert (deltas["lo"][i][l - 1], deltas["hi"][i][l - 1]) == (h.edges[0], h.edges[-1])
    json.dumps(record, allow_nan=False)  # JSON as it is


def _payload(page: str, block: str) -> bytes:
    text = re.search(rf'<script type="application/octet-stream" id="{block}">(.*?)</script>',
                     page, re.S)[1]
    return gzip.decompress(base64.b64decode(text))


def test_the_page_carries_its_data_and_plotly_and_fetches_nothing(tmp_path):
    result, meta = _trained()
    record = fr.record_from_history(result.history, result.histograms, meta)
    path = write_page([record], tmp_path, title="t <1>", conclusions=["**sigmoid** vanishes"])
    page = path.read_text()
    assert path.name == "gradient_flow.html"
    assert "<b>sigmoid</b> vanishes" in page and "t &lt;1&gt;" in page
    data = json.loads(_payload(page, "gf-data"))
    assert [r["id"] for r in data["runs"]] == ["r1"]
    assert data["default_metric"] == "delta_std"
    assert b"plotly.js" in _payload(page, "gf-plotly")[:300]
    # Nothing is loaded from elsewhere: no external script, style sheet, image or request.
    outside = page.split('id="gf-plotly">')[0] + page.split('id="gf-data">')[1]
    for pattern in (r"<script[^>]+src=", r"<link", r"<img", r"fetch\(", r"XMLHttpRequest",
                    r"import\(", r"https?://"):
        assert not re.search(pattern, outside), pattern


def test_a_page_of_many_long_runs_thins_their_epochs_to_its_budget():
    result, meta = _trained(epochs=600, histogram_every=0)
    record = fr.record_from_history(result.history, [], meta)
    records = [{**record, "id": f"r{i}"} for i in range(40)]
    page = render_page(records, title="many", budget=100_000)
    data = json.loads(_payload(page, "gf-data"))
    kept = len(data["runs"][0]["epochs"])
    values = sum(len(r["values"]) * 4 * len(r["epochs"]) for r in data["runs"])
    assert values <= 100_000 and kept < len(record["epochs"])
    assert data["runs"][0]["epochs"][0] == 0 and data["runs"][0]["epochs"][-1] == 600
    assert f"Epochs: {kept} of 601 per run are drawn, log-spaced" in page


def test_the_page_worker_draws_a_sweep_folder_and_names_its_failures(tmp_path):
    from backprop_lab.contract import FLOW_RECORD_FILE
    from backprop_lab.harness.page_worker import PageWorker

    worker = PageWorker()
    try:
        assert worker.build(tmp_path, "s1", "empty") is None  # no job left a record
    finally:
        worker.close()
    result, meta = _trained()
    job = tmp_path / "0"
    job.mkdir()
    fr.save_record({**fr.record_from_history(result.history, result.histograms, meta),
                    "sweep_id": "s1"}, job / FLOW_RECORD_FILE)
    worker = PageWorker()
    try:
        path = worker.build(tmp_path, "s1", "one job")
    finally:
        worker.close()
    assert path == tmp_path / "gradient_flow.html" and worker.seconds > 0
    assert "Gradient flow: one job" in path.read_text()
    (job / FLOW_RECORD_FILE).write_text('{"sweep_id": "s1", "id": "x"}')  # no values
    worker = PageWorker()
    try:
        with pytest.raises(RuntimeError, match="KeyError"):
            worker.build(tmp_path, "s1", "broken")
    finally:
        worker.close()
    assert worker.proc.poll() is not None
