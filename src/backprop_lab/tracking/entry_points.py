"""MLflow entry points for the ``backprop-lab+<database URI>`` scheme (see pyproject.toml).

MLflow loads these functions while ``mlflow.tracking`` is still being imported, so this module
imports nothing of MLflow until a store is asked for.
"""

from __future__ import annotations

SCHEME_PREFIX = "backprop-lab+"


def _database_uri(store_uri: str) -> str:
    return store_uri[len(SCHEME_PREFIX):] if store_uri.startswith(SCHEME_PREFIX) else store_uri


def tracking_store(store_uri: str, artifact_uri: str | None = None):
    """MLflow's SQL tracking store with bulk metric inserts (server_store.py)."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH

    from backprop_lab.tracking.server_store import BulkMetricsSqlAlchemyStore

    # MLflow's client passes None and its SQL stores then use ./mlruns, as here.
    return BulkMetricsSqlAlchemyStore(_database_uri(store_uri),
                                      artifact_uri or DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)


def registry_store(store_uri: str):
    """The model registry in the same database: MLflow's own store."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    return SqlAlchemyStore(_database_uri(store_uri))
