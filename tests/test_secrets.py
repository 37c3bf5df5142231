"""No password or token is recorded or printed (issue 19): a known secret put in every place a
user could put one (tracking URIs, a key of the user's own, MLflow's credential variables, a
server address with user info) is looked for in the store, the job folders, the artifacts and
everything the command printed. Against a server: a basic-auth proxy in front of a real MLflow
server proves the credentials are sent and work (marked integration)."""

from __future__ import annotations

import base64
import http.client
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backprop_lab.tracking.secrets import credentials, mask, register, without_credentials
from tests.conftest import TRAIN, cli_env, runs_of, split_roles

SECRET = "Hunter2Secret"


def files_holding(root: Path, secret: str = SECRET) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("text, shown", [
    ("postgresql+psycopg2://bob:PW0rd@h:5432/db", "postgresql+psycopg2://***@h:5432/db"),
    ("http://alice:p@ss@host:5050/x", "http://***@host:5050/x"),
    ("https://TOKEN123@host", "https://***@host"),
    (r"+note=postgresql\://bob\:PW0rd@h/db", r"+note=postgresql\://***@h/db"),  # Hydra's escape
    ("s3://b/k?X-Amz-Signature=abc123&x=1", "s3://b/k?X-Amz-Signature=***&x=1"),
    ("x?password=pw123;y", "x?password=***;y"),
    # Left alone: no credentials.
    ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),
    ("mail me: me@example.com, see http://host/a@b", "mail me: me@example.com, see http://host/a@b"),
    ("tanh-depth10-seed1", "tanh-depth10-seed1"),
])
def test_mask(text, shown):
    assert mask(text) == shown


def test_registered_secrets_are_masked_anywhere_and_credentials_are_read_as_mlflow_does():
    register("S0meToken%21")
    assert mask("error: bad token S0meToken! sent") == "error: bad token *** sent"
    assert credentials("http://a%40b:p%3Aw@h:1/x") == ("a@b", "p:w")
    assert credentials("http://h:1") is None
    assert without_credentials("http://a:b@h:1/x") == "http://h:1/x"


def assert_nowhere(secrets: list[str], *texts: str, folders: list[Path]) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"{secret} printed:\n{text[-3000:]}"
        for folder in folders:
            assert not files_holding(folder, secret), (secret, files_holding(folder, secret))


def test_a_secret_in_every_place_shows_nowhere(run_cli, tmp_path, store, client_for):
    """A sweep with credentials in a key of the user's own and in MLflow's environment
    variables, then every way a URI with credentials can be refused."""
    token = "T0kenValue99"
    result = run_cli("-m", "activation=tanh,relu", "epochs=3", "figures=true",
                     f"+note=postgresql+psycopg2://bob:{SECRET}@db.example:5432/x",
                     f"+signed='s3://bucket/k?token={token}'", f"tracking.uri={store}",
                     MLFLOW_TRACKING_USERNAME="bob", MLFLOW_TRACKING_PASSWORD=SECRET,
                     MLFLOW_TRACKING_TOKEN=token)
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(store)
    parents, jobs = split_roles(runs_of(client))
    assert len(parents) == 1 and len(jobs) == 2
    job = jobs[0]
    assert job.data.params["note"] == "postgresql+psycopg2://***@db.example:5432/x"
    assert "note=postgresql+psycopg2\\://***@db.example" in job.data.tags["hydra.overrides"]
    assert job.data.params["signed"] == "s3://bucket/k?token=***"
    outputs = [result.stdout + result.stderr]
    # Refused before any run, each naming the value with its credentials masked.
    for uri, words in [
            (f"postgresql://bob:{SECRET}@127.0.0.1:1/db", "postgresql+psycopg2://***@127.0.0.1"),
            (f"foo://bob:{SECRET}@bar", "unsupported tracking URI scheme 'foo'"),
            (f"http://bob:{SECRET}@127.0.0.1:9", "http://***@127.0.0.1:9 is not reachable"),
            (f"mysql+pymysql://bob:{SECRET}@127.0.0.1:9/db", "mysql+pymysql://***@127.0.0.1")]:
        refused = run_cli("epochs=2", f"tracking.uri={uri}", timeout=120)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert words in refused.stderr, refused.stderr
        outputs.append(refused.stdout + refused.stderr)
    assert_nowhere([SECRET, token], *outputs, folders=[tmp_path])


# -- against a server that wants credentials ---------------------------------------------------


class BasicAuthProxy(http.server.ThreadingHTTPServer):
    """Forwards requests carrying ``user:password`` basic auth to ``upstream``; 401 to others."""

    daemon_threads = True

    def __init__(self, upstream: tuple[str, int], user: str, password: str) -> None:
        self.upstream = upstream
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.authorized = self.refused = 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _forward(self) -> None:
        server: BasicAuthProxy = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.headers.get("Authorization") != server.expected:
            server.refused += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        server.authorized += 1
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("authorization", "host", "connection")}
        upstream = http.client.HTTPConnection(*server.upstream, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


@pytest.mark.integration
def test_credentials_reach_a_server_and_are_recorded_nowhere(tmp_path):
    from mlflow.tracking import MlflowClient

    from backprop_lab.tracking.server import free_port
    from tests.conftest import wait_for_health

    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    db = tmp_path / "server.db"
    proc = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{db}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = BasicAuthProxy(("127.0.0.1", port), "alice", SECRET)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{proxy.server_address[1]}"
    try:
        wait_for_health(f"http://127.0.0.1:{port}", proc)
        work = tmp_path / "work"
        work.mkdir()

        def train(*args: str, **env: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, str(TRAIN), *args, "epochs=3",
                                   "figures=false", "progress=false",
                                   f"hydra.sweep.dir={work / 'sweep'}",
                                   f"hydra.run.dir={work / 'run'}"],
                                  cwd=work, env=cli_env(**env), capture_output=True, text=True,
                                  timeout=300)

        # The address with user info: our own REST client sends it as basic auth.
        swept = train("-m", "activation=tanh,relu", f"tracking.uri=http://alice:{SECRET}@{address}")
        assert swept.returncode == 0, swept.stdout[-2000:] + swept.stderr[-3000:]
        assert f"http://***@{address}" in swept.stdout
        # MLflow's documented variables: MLflow's own client sends them.
        single = train(f"tracking.uri=http://{address}", "tracking.experiment=env-credentials",
                       MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=SECRET)
        assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-3000:]
        # Without credentials the proxy refuses, and the command says so before any run.
        refused = train(f"tracking.uri=http://{address}", "tracking.experiment=none")
        assert refused.returncode == 1
        assert proxy.authorized > 10

        client = MlflowClient(f"http://127.0.0.1:{port}")
        parents, jobs = split_roles(runs_of(client))
        assert len(parents) == 1 and len(jobs) == 2
        assert {r.info.status for r in jobs} == {"FINISHED"}
        assert jobs[0].data.params["tracking.uri"] == f"http://***@{address}"
        (env_run,) = runs_of(client, "env-credentials")
        assert env_run.info.status == "FINISHED" and env_run.data.metrics
        assert_nowhere([SECRET], swept.stdout + swept.stderr, single.stdout + single.stderr,
                       refused.stdout + refused.stderr, folders=[tmp_path])
    finally:
        proxy.shutdown()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


