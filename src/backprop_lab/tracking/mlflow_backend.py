"""The store kind for everything the direct writers do not take: MLflow's own ``MlflowClient``
(https, servers that need MLflow's credentials, PostgreSQL or MySQL URIs, SQLite stores of
another MLflow version). Over HTTP its ``log-batch`` requests are sent by a pool of threads, so
training does not wait for the server. Chosen by :func:`~backprop_lab.tracking.store.open_store`;
the REST writer (rest_store.py) falls back to it for what it does not send itself.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np

from backprop_lab.tracking.records import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    running_run,
    text,
)
from backprop_lab.tracking.sqlite_store import deleted_experiment, first_failure, wait_all

HTTP_REQUESTS_IN_FLIGHT = 4


class MlflowBackend:
    """Writes through ``MlflowClient``; metric batches in background threads over HTTP."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        remote = urlparse(uri).scheme in ("http", "https")
        self._pool = (ThreadPoolExecutor(HTTP_REQUESTS_IN_FLIGHT, thread_name_prefix="mlflow-send")
                      if remote else None)
        self._pending: list[Future] = []

    def ensure_experiment(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage != "active":
                raise deleted_experiment(name, self.uri)
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # created meanwhile by another process
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def create_run(self, experiment_id, run_name, params, tags) -> str:
        from mlflow.entities import Param

        run_id = self.client.create_run(experiment_id, run_name=run_name,
                                        tags={k: text(v) for k, v in tags.items()}).info.run_id
        items = [Param(k, text(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH],
                                  synchronous=True)
        return run_id

    def log_metrics(self, run_id, names, steps, values, timestamps) -> None:
        block = {"run_id": run_id, "names": list(names), "steps": steps.tolist(),
                 "timestamps": timestamps.tolist(),
                 "values": np.asarray(values, dtype=np.float64).tolist()}
        if self._pool is None:
            self._log_batches(block)
        else:
            self._pending.append(self._pool.submit(self._log_batches, block))

    def _log_batches(self, block: dict) -> None:
        """The block as MLflow log_batch calls of at most 1000 metrics."""
        from mlflow.entities import Metric

        metrics = [Metric(name, value, ts, step)
                   for name, row in zip(block["names"], block["values"])
                   for value, ts, step in zip(row, block["timestamps"], block["steps"])]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(block["run_id"], metrics=metrics[i : i + MAX_METRICS_PER_BATCH],
                                  synchronous=True)

    def set_tags(self, run_id, tags) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, text(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[i : i + MAX_PARAMS_PER_BATCH],
                                  synchronous=True)

    def log_artifacts(self, run_id, specs) -> None:
        for spec in specs:
            if spec.local.is_dir():
                self.client.log_artifacts(run_id, str(spec.local), spec.artifact_path)
            elif spec.local.exists():
                self.client.log_artifact(run_id, str(spec.local), spec.artifact_path)

    def end_run(self, run_id, status, tags) -> None:
        """After the metric batches in flight (their errors are :meth:`flush`'s to raise)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.exception()  # waits
        self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, status=status)

    def running_runs(self, experiment_ids=None) -> list:
        if experiment_ids is None:
            experiment_ids = [e.experiment_id for e in self.client.search_experiments()]
        runs = self.client.search_runs(experiment_ids, "attributes.status = 'RUNNING'",
                                       max_results=5000) if experiment_ids else []
        return [running_run(r.info.run_id, r.info.run_name, r.info.experiment_id,
                            r.info.start_time, r.data.tags) for r in runs]

    def mark_failed(self, run_id, tags, status: str = "FAILED") -> bool:
        if self.client.get_run(run_id).info.status != "RUNNING":
            return False
        self.end_run(run_id, status, tags)
        return True

    def experiment_id(self, name: str) -> str | None:
        found = self.client.get_experiment_by_name(name)
        return None if found is None else found.experiment_id

    def flush(self) -> None:
        """Wait for every metric batch sent so far; raise the first error among them."""
        pending, self._pending = self._pending, []
        wait_all(pending)

    def failure(self) -> BaseException | None:
        """The error of a batch that failed so far, without waiting (None: none)."""
        return first_failure(self._pending)
