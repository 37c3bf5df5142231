"""The MLflow server app of scripts/tracking_server.py: MLflow's own, plus one route for blocks.

``mlflow server --app-name backprop-lab`` (registered with MLflow's ``mlflow.app`` entry point in
pyproject.toml) serves MLflow's FastAPI app unchanged, with one route in front of it:

    POST /backprop-lab/api/log-metric-block
    {"run_id": "...", "names": [k names], "steps": [n ints], "timestamps": [n ints, ms],
     "values": [k rows of n floats]}        (NaN and +/-Infinity as Python's json writes them)
    -> {"written": k * n}

MLflow's REST ``log-batch`` carries at most 1000 metrics a request, each a JSON object that the
client builds and the server parses field by field; a block is a few JSON arrays, so sending and
parsing it cost a small part of writing it. The rows are written by the server's tracking store
(``BulkMetricsSqlAlchemyStore.log_metric_block``), with MLflow's encodings. A client that gets
404 from a server without this route (``tracking/store.py``) uses ``log-batch`` instead.
"""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from mlflow.exceptions import MlflowException
from mlflow.server.fastapi_app import app
from mlflow.server.handlers import _get_tracking_store
from starlette.concurrency import run_in_threadpool

from backprop_lab.tracking.store import BLOCK_ROUTE


async def log_metric_block(request: Request) -> JSONResponse:
    """Write one block of metric history (see the module docstring)."""
    try:
        block = json.loads(await request.body())
        # Private, as MLflow has no public accessor for the server's own tracking store.
        store = _get_tracking_store()
        if not hasattr(store, "log_metric_block"):
            return JSONResponse({"error": "this server's store does not take metric blocks"},
                                status_code=404)
        written = await run_in_threadpool(  # the database write must not block the loop
            store.log_metric_block, block["run_id"], block["names"], block["steps"],
            block["timestamps"], block["values"])
    except (KeyError, TypeError, ValueError) as exc:
        return JSONResponse({"error": f"bad metric block: {exc!r}"}, status_code=400)
    except MlflowException as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.get_http_status_code())
    return JSONResponse({"written": written})


# In front of MLflow's own routes (the last of which hands every other path to MLflow's app).
app.router.routes.insert(0, APIRoute(BLOCK_ROUTE, log_metric_block, methods=["POST"]))

__all__ = ["app"]
