"""What the MLflow UI shows of a run and a sweep: metric keys in layer order, the gradient-flow
page among the artifacts, the sweep's result on its parent run. Real CLI, real store, MLflow's
client.
"""

from __future__ import annotations

from backprop_lab.engine.history import layer_metric_name
from tests.conftest import runs_of, split_roles


def test_layer_keys_sort_in_layer_order_as_the_ui_lists_them(run_cli, store, client_for):
    result = run_cli("model=deep", "model.depth=11", "epochs=2", "figures=false",
                     f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    run = split_roles(runs_of(client_for(store)))[1] or runs_of(client_for(store))
    keys = [k for k in run[0].data.metrics if k.startswith("grad_norm/")]
    assert sorted(keys) == [layer_metric_name("grad_norm", l) for l in range(1, 13)]


def test_a_single_run_logs_its_gradient_flow_page_and_no_step_images(run_cli, store,
                                                                      client_for, tmp_path):
    result = run_cli("model=deep", "model.depth=3", "epochs=20", "histogram_every=10",
                     "figures=false", f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    client = client_for(store)
    run = runs_of(client)[0]
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "gradient_flow.html" in paths and "images" not in paths
    assert "mlflow.loggedImages" not in run.data.tags
    page = (tmp_path / "run" / "gradient_flow.html").read_text()
    assert 'id="gf-plotly"' in page and 'id="gf-data"' in page
    assert float(run.data.tags["backprop_lab.seconds.gradient_flow"]) > 0


def test_a_sweep_logs_one_page_comparing_its_children_to_its_parent(run_cli, store, client_for,
                                                                     tmp_path):
    from backprop_lab.analysis.gradient_flow import records_in_folder

    result = run_cli("-m", "activation=sigmoid,relu", "epochs=5", f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    client = client_for(store)
    parents, jobs = split_roles(runs_of(client))
    assert "gradient_flow.html" in {a.path for a in client.list_artifacts(
        parents[0].info.run_id)}
    for job in jobs:  # the children have no page of their own: the parent compares them
        assert "gradient_flow.html" not in {a.path for a in client.list_artifacts(
            job.info.run_id)}
    records = records_in_folder(tmp_path / "sweep")
    assert sorted(r["id"] for r in records) == sorted(j.info.run_id for j in jobs)
    assert (tmp_path / "sweep" / "gradient_flow.html").stat().st_size > 100_000
    assert "gradient_flow.html" in parents[0].data.tags["mlflow.note.content"]
    # The page's conclusion (from the jobs' records) is the report's (from the store).
    from backprop_lab.analysis import load_sweep, summary
    from backprop_lab.analysis.gradient_flow import conclusions_of

    sweep = load_sweep(store, None, parents[0].info.run_id)
    assert conclusions_of(records) == summary.conclusions(sweep.runs, sweep.histories)


def test_the_removed_tracking_images_fails_naming_its_replacement(run_cli, store, tmp_path):
    result = run_cli("epochs=2", "tracking.images=true", f"tracking.uri={store}")
    assert result.returncode != 0
    assert "tracking.images=True: removed: the step images are replaced by the interactive " \
        "page gradient_flow.html" in result.stderr
    assert not (tmp_path / "store" / "mlflow.db").exists()


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
    result = run_cli("epochs=2", "figures=false",
                     "tracking.log10=[grad_norm,update_ratio]", f"tracking.uri={store}")
    assert result.returncode == 0, result.stderr
    keys = {k.split("/")[0] for k in runs_of(client_for(store))[0].data.metrics}
    assert {k for k in keys if k.endswith("_log10")} == {"grad_norm_log10", "update_ratio_log10"}
