"""What the MLflow UI shows of a run and a sweep: metric keys in layer order, step images in
MLflow's own layout, the sweep's result on its parent run. Real CLI, real store, MLflow's client.
"""

from __future__ import annotations

import re

from backprop_lab.engine.history import layer_metric_name
from tests.conftest import runs_of, split_roles

# MLflow's keyed-image file names (MlflowClient.log_image with key= and step=).
IMAGE_NAME = re.compile(r"images/(?P<key>[^+]+)\+step\+(?P<step>\d+)\+timestamp\+\d+\+"
                        r"[0-9a-f-]{36}(?P<compressed>\+compressed)?\.(?P<ext>png|webp)")


def image_files(client, run_id: str) -> list[str]:
    return [a.path for a in client.list_artifacts(run_id, "images")]


def test_layer_keys_sort_in_layer_order_as_the_ui_lists_them(run_cli, store, client_for):
    result = run_cli("model=deep", "model.depth=11", "epochs=2", "figures=false",
                     "tracking.images=false", f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    run = split_roles(runs_of(client_for(store)))[1] or runs_of(client_for(store))
    keys = [k for k in run[0].data.metrics if k.startswith("grad_norm/")]
    assert sorted(keys) == [layer_metric_name("grad_norm", l) for l in range(1, 13)]


def test_step_images_are_stored_as_mlflow_log_image_stores_them(run_cli, store, client_for,
                                                                tmp_path):
    from PIL import Image

    result = run_cli("model=deep", "model.depth=3", "epochs=20", "histogram_every=10",
                     "figures=false", f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    client = client_for(store)
    run = runs_of(client)[0]
    assert run.data.tags["mlflow.loggedImages"] == "True"
    ours = image_files(client, run.info.run_id)
    parsed = [IMAGE_NAME.fullmatch(p) for p in ours]
    assert all(parsed), ours
    steps = {(m["key"], int(m["step"]), bool(m["compressed"]), m["ext"]) for m in parsed}
    assert steps == {(key, step, compressed, "webp" if compressed else "png")
                     for key in ("gradient_profile", "histograms") for step in (0, 10, 20)
                     for compressed in (False, True)}
    webp = next(p for p in ours if p.endswith(".webp"))
    with Image.open(client.download_artifacts(run.info.run_id, webp, str(tmp_path))) as image:
        assert max(image.size) == 256

    # MLflow's own client, into another run of the same store, names its files the same way.
    other = client.create_run(run.info.experiment_id).info.run_id
    import numpy as np

    client.log_image(other, np.zeros((8, 8, 3), dtype=np.uint8), key="gradient_profile",
                     step=10)
    theirs = image_files(client, other)
    assert len(theirs) == 2 and all(IMAGE_NAME.fullmatch(p) for p in theirs)
    assert client.get_run(other).data.tags["mlflow.loggedImages"] == "True"


def test_the_parent_run_describes_the_sweep_with_a_table_of_its_children(run_cli, store,
                                                                         client_for):
    result = run_cli("-m", "activation=sigmoid,relu", "seed=0,1", "epochs=3",
                     f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    parents, jobs = split_roles(runs_of(client_for(store)))
    note = parents[0].data.tags["mlflow.note.content"]
    assert "4 runs over `activation`, `seed` (4 finished)" in note
    assert "| run | activation | seed | outcome | val loss | val acc |" in note
    for job in jobs:
        row = next(line for line in note.splitlines() if job.info.run_id in line)
        assert row.startswith(f"| [{job.info.run_name}](#/experiments/")
        assert f"| {job.data.params['activation']} | {job.data.params['seed']} | finished |" \
            in row
        assert f"{job.data.metrics['val/loss']:.4g}" in row


def test_a_log10_companion_of_an_unknown_metric_fails_before_any_run(run_cli, store, tmp_path):
    result = run_cli("epochs=2", "tracking.log10=[grad_nrm]", f"tracking.uri={store}")
    assert result.returncode != 0
    assert "tracking.log10=['grad_nrm']: must list per-layer metrics, of grad_weight_ratio" \
        in result.stderr
    assert not (tmp_path / "store" / "mlflow.db").exists()


def test_the_companions_follow_tracking_log10(run_cli, store, client_for):
    result = run_cli("epochs=2", "figures=false", "tracking.images=false",
                     "tracking.log10=[grad_norm,update_ratio]", f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    keys = {k.split("/")[0] for k in runs_of(client_for(store))[0].data.metrics}
    assert {k for k in keys if k.endswith("_log10")} == {"grad_norm_log10", "update_ratio_log10"}
