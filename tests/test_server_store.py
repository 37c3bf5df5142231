"""Our tracking server's store and its block route, on SQLite (PostgreSQL: the integration
tests): ``BulkMetricsSqlAlchemyStore`` writes the rows MLflow's own ``SqlAlchemyStore`` writes,
through ``log_batch`` and through metric blocks, and the route answers as documented."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient

from backprop_lab.tracking.entry_points import tracking_store
from backprop_lab.tracking.store import BLOCK_ROUTE
from tests.test_tracking_store import BLOCKS, NAMES, assert_same_histories, log_batch_blocks


@pytest.fixture
def stores(tmp_path):
    """(db file, our store, MLflow's store, an experiment id) on one new SQLite database."""
    db = tmp_path / "mlflow.db"
    ours = tracking_store(f"backprop-lab+sqlite:///{db}", str(tmp_path / "artifacts"))
    theirs = SqlAlchemyStore(f"sqlite:///{db}", str(tmp_path / "artifacts"))
    return db, ours, theirs, ours.create_experiment("server")


def new_run(store, experiment_id: str) -> str:
    return store.create_run(experiment_id, "unknown", 0, [], "r").info.run_id


def test_entry_points_resolve_the_prefixed_scheme(tmp_path) -> None:
    client = MlflowClient(f"backprop-lab+sqlite:///{tmp_path / 'a.db'}")
    assert type(client._tracking_client.store).__name__ == "BulkMetricsSqlAlchemyStore"


def test_log_batch_rows_equal_mlflows(stores, rows_of) -> None:
    db, ours, theirs, experiment_id = stores
    mine, reference = new_run(ours, experiment_id), new_run(theirs, experiment_id)
    log_batch_blocks(MlflowClient(f"backprop-lab+sqlite:///{db}"), mine)
    log_batch_blocks(MlflowClient(f"sqlite:///{db}"), reference)
    for table in ("metrics", "latest_metrics"):
        assert rows_of(db, table, mine) == rows_of(db, table, reference), table
    assert_same_histories(MlflowClient(f"sqlite:///{db}"), mine, reference)


def test_metric_blocks_equal_log_batch(stores, rows_of) -> None:
    db, ours, theirs, experiment_id = stores
    mine, reference = new_run(ours, experiment_id), new_run(theirs, experiment_id)
    for steps, values, times in BLOCKS:
        written = ours.log_metric_block(mine, NAMES, steps.tolist(), times.tolist(),
                                        values.tolist())
        assert written == values.size
    log_batch_blocks(MlflowClient(f"sqlite:///{db}"), reference)
    for table in ("metrics", "latest_metrics"):
        assert rows_of(db, table, mine) == rows_of(db, table, reference), table


def post_block(body: bytes):
    """Call the route's handler as the server does, with ``body`` as the request's body."""
    from starlette.requests import Request

    from backprop_lab.tracking.server_app import log_metric_block

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request({"type": "http", "method": "POST", "path": BLOCK_ROUTE, "headers": []},
                      receive)
    response = asyncio.run(log_metric_block(request))
    return response.status_code, json.loads(response.body)


def test_block_route_writes_through_the_servers_store(stores, monkeypatch) -> None:
    import mlflow.server.handlers as handlers

    from backprop_lab.tracking.server_app import app

    assert app.router.routes[0].path == BLOCK_ROUTE  # before MLflow's catch-all mount
    db, ours, _, experiment_id = stores
    monkeypatch.setattr(handlers, "_tracking_store", ours)
    run_id = new_run(ours, experiment_id)
    block = {"run_id": run_id, "names": ["a", "b"], "steps": [0, 1], "timestamps": [5, 6],
             "values": [[1.5, math.nan], [math.inf, -2.0]]}
    assert post_block(json.dumps(block).encode()) == (200, {"written": 4})
    client = MlflowClient(f"sqlite:///{db}")
    assert [m.value for m in client.get_metric_history(run_id, "b")] == [
        1.7976931348623157e308, -2.0]  # inf stored as MLflow stores it
    assert math.isnan(client.get_metric_history(run_id, "a")[1].value)
    status, answer = post_block(b'{"run_id": "x"}')
    assert status == 400 and "names" in answer["error"]
    status, answer = post_block(json.dumps({**block, "values": [[1.0]]}).encode())
    assert status == 400 and "len(values)" in answer["error"]
    status, answer = post_block(json.dumps({**block, "run_id": "0" * 32}).encode())
    assert status == 404 and "not found" in answer["error"]
