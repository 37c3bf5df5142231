"""A tracking server spoken to over MLflow's REST API with the standard library.

A job that records into a server needs a handful of MLflow's REST calls (experiments/get-by-name
and create, runs/create, runs/log-batch for params and tags, runs/update) and artifact uploads
(``PUT /api/2.0/mlflow-artifacts/artifacts/...`` of a server started with ``--serve-artifacts``);
made with ``http.client`` on a kept-alive connection, they spare each process MLflow's import,
which costs more than a small run's training. Metric blocks go to our server's block route
(server_app.py) from a pool of threads.

:func:`backprop_lab.tracking.store.open_store` uses this backend for plain ``http://`` servers
without MLflow credentials in the environment. Anything else it does not handle (a server without
the block route, artifacts in a store the server does not proxy) is handed to
:class:`~backprop_lab.tracking.mlflow_backend.MlflowBackend`, which MLflow's own client backs.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import numpy as np

from backprop_lab.tracking.records import running_run, text
from backprop_lab.tracking.sqlite_store import deleted_experiment, first_failure, wait_all

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
#: Environment variables that ask MLflow's client for authentication or TLS settings: with any of
#: them set, MLflow's own client is used instead of this one.
MLFLOW_AUTH_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                   "MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_INSECURE_TLS",
                   "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH")


def basic_auth_header(uri: str) -> str | None:
    """The ``Authorization`` header of an ``http://user:pw@host`` URI (None: no user info)."""
    import base64

    from backprop_lab.tracking.secrets import credentials

    found = credentials(uri)
    if found is None:
        return None
    return "Basic " + base64.b64encode(":".join(found).encode()).decode()


class RestError(RuntimeError):
    """An MLflow server answered with an error."""

    def __init__(self, status: int, answer: dict, what: str) -> None:
        self.status = status
        self.code = answer.get("error_code", "")
        super().__init__(f"{what}: HTTP {status} {self.code} {answer.get('message', '')}".strip())


class RestBackend:
    """The Backend of store.py over MLflow's REST API (see the module docstring)."""

    def __init__(self, uri: str, *, requests_in_flight: int, block_route: str,
                 max_params: int, timeout: float = 120.0) -> None:
        parsed = urlparse(uri)
        self.uri = uri
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.prefix = parsed.path.rstrip("/")
        self.timeout = timeout
        self.block_route = block_route
        self.max_params = max_params
        self._local = threading.local()  # one kept-alive connection per thread
        self._pool = ThreadPoolExecutor(requests_in_flight, thread_name_prefix="mlflow-send")
        self._pending: list[Future] = []
        self._artifact_uris: dict[str, str] = {}
        self._fallback = None  # MlflowBackend, made when first needed
        # http://user:pw@host: basic auth, as MLflow's client (requests) sends it.
        self._auth = basic_auth_header(uri)

    # -- HTTP ---------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def _send(self, method: str, path: str, body: bytes | None = None,
              content_type: str = "application/json") -> tuple[int, bytes]:
        headers = {"Content-Type": content_type} if body is not None else {}
        if self._auth:
            headers["Authorization"] = self._auth
        for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
            connection = self._connection()
            try:
                connection.request(method, self.prefix + path, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _call(self, method: str, endpoint: str, payload: dict | None = None,
              query: str = "") -> dict:
        body = None if payload is None else json.dumps(payload).encode()
        status, raw = self._send(method, f"{API}/{endpoint}{query}", body)
        answer = json.loads(raw or b"{}") if raw[:1] in (b"{", b"") else {"message": raw[:300]}
        if status != 200:
            raise RestError(status, answer, f"{method} {endpoint}")
        return answer

    def _mlflow(self):
        if self._fallback is None:
            from backprop_lab.tracking.mlflow_backend import MlflowBackend  # imports mlflow

            self._fallback = MlflowBackend(self.uri)
        return self._fallback

    # -- the Backend interface ----------------------------------------------------------------
    def ensure_experiment(self, name: str, artifact_location: str | None) -> str:
        try:
            found = self._call("GET", "experiments/get-by-name",
                               query=f"?experiment_name={quote(name)}")["experiment"]
        except RestError as exc:
            if exc.code != "RESOURCE_DOES_NOT_EXIST":
                raise
            payload: dict[str, Any] = {"name": name}
            if artifact_location:
                payload["artifact_location"] = artifact_location
            try:
                return self._call("POST", "experiments/create", payload)["experiment_id"]
            except RestError as again:  # created meanwhile by another process
                if again.code != "RESOURCE_ALREADY_EXISTS":
                    raise
                return self.ensure_experiment(name, artifact_location)
        if found.get("lifecycle_stage") != "active":
            raise deleted_experiment(name, self.uri)
        return found["experiment_id"]

    def create_run(self, experiment_id: str, run_name: str, params: Mapping[str, str],
                   tags: Mapping[str, str]) -> str:
        info = self._call("POST", "runs/create", {
            "experiment_id": experiment_id, "run_name": run_name,
            "start_time": int(time.time() * 1000),
            "tags": [{"key": k, "value": text(v)} for k, v in tags.items()],
        })["run"]["info"]
        run_id = info["run_id"]
        self._artifact_uris[run_id] = info.get("artifact_uri", "")
        items = [{"key": k, "value": text(v)} for k, v in params.items()]
        for i in range(0, len(items), self.max_params):
            self._call("POST", "runs/log-batch",
                       {"run_id": run_id, "params": items[i : i + self.max_params]})
        return run_id

    def log_metrics(self, run_id: str, names, steps: np.ndarray, values: np.ndarray,
                    timestamps: np.ndarray) -> None:
        block = {"run_id": run_id, "names": list(names), "steps": steps.tolist(),
                 "timestamps": timestamps.tolist(),
                 "values": np.asarray(values, dtype=np.float64).tolist()}
        self._pending.append(self._pool.submit(self._send_block, block))

    def _send_block(self, block: dict) -> None:
        if self._fallback is None:
            status, raw = self._send("POST", self.block_route, json.dumps(block).encode())
            if status == 200:
                return
            if status != 404:
                raise RuntimeError(f"{self.uri}{self.block_route} answered {status}: "
                                   f"{raw[:500]!r}")
        self._mlflow()._log_batches(block)  # a server without the block route

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        items = [{"key": k, "value": text(v)} for k, v in tags.items()]
        for i in range(0, len(items), self.max_params):
            self._call("POST", "runs/log-batch",
                       {"run_id": run_id, "tags": items[i : i + self.max_params]})

    def log_artifacts(self, run_id: str, specs: Iterable) -> None:
        uri = self._artifact_uris.get(run_id)
        if uri is None:
            uri = self._call("GET", "runs/get", query=f"?run_id={run_id}")["run"]["info"][
                "artifact_uri"]
        if not uri.startswith("mlflow-artifacts:"):  # not proxied by the server
            self._mlflow().log_artifacts(run_id, specs)
            return
        root = urlparse(uri).path.rstrip("/")  # /<experiment id>/<run id>/artifacts
        for spec in specs:
            local = Path(spec.local)
            if not local.exists():
                continue
            files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() \
                else [local]
            for path in files:
                relative = path.relative_to(local if local.is_dir() else local.parent)
                target = "/".join(p for p in (spec.artifact_path, relative.as_posix()) if p)
                status, raw = self._send("PUT", f"{ARTIFACTS_API}{root}/{quote(target)}",
                                         path.read_bytes(), "application/octet-stream")
                if status != 200:
                    raise RuntimeError(f"uploading {path} to {self.uri}: HTTP {status} "
                                       f"{raw[:300]!r}")

    def end_run(self, run_id: str, status: str, tags: Mapping[str, str]) -> None:
        """After the blocks in flight (their errors are :meth:`flush`'s to raise)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.exception()  # waits
        self.set_tags(run_id, tags)
        self._call("POST", "runs/update", {"run_id": run_id, "status": status,
                                           "end_time": int(time.time() * 1000)})

    def running_runs(self, experiment_ids=None) -> list:
        if experiment_ids is None:
            experiment_ids = [e["experiment_id"] for e in self._call(
                "POST", "experiments/search", {"max_results": 1000}).get("experiments", [])]
        found, token = [], None
        while experiment_ids:
            payload = {"experiment_ids": list(experiment_ids), "max_results": 1000,
                       "filter": "attributes.status = 'RUNNING'"}
            if token:
                payload["page_token"] = token
            answer = self._call("POST", "runs/search", payload)
            for run in answer.get("runs", []):
                info = run["info"]
                tags = {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}
                found.append(running_run(info["run_id"], info.get("run_name"),
                                         info["experiment_id"], info.get("start_time"), tags))
            token = answer.get("next_page_token")
            if not token:
                break
        return found

    def mark_failed(self, run_id: str, tags: Mapping[str, str], status: str = "FAILED") -> bool:
        info = self._call("GET", "runs/get", query=f"?run_id={run_id}")["run"]["info"]
        if info.get("status") != "RUNNING":
            return False
        self.end_run(run_id, status, tags)
        return True

    def experiment_id(self, name: str) -> str | None:
        try:
            return self._call("GET", "experiments/get-by-name",
                              query=f"?experiment_name={quote(name)}")["experiment"][
                "experiment_id"]
        except RestError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def failure(self) -> BaseException | None:
        """The error of a block that failed so far, without waiting (None: none)."""
        return first_failure(self._pending)

    def flush(self) -> None:
        """Wait for every metric block sent so far; raise the first error among them."""
        pending, self._pending = self._pending, []
        wait_all(pending)
