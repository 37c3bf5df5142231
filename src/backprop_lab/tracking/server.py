"""A shared MLflow tracking server: PostgreSQL for runs, a folder for artifacts, on 127.0.0.1.

    python scripts/tracking_server.py start    # or: make server-start
    python scripts/tracking_server.py status
    python scripts/tracking_server.py stop     # or: make server-stop

Everything lives in one folder (default ``<repo>/.tracking-server``, ``--dir`` elsewhere):

    pg/data/            the PostgreSQL cluster (initdb on first start; owned by user postgres
                        when started as root, since PostgreSQL refuses to run as root)
    pg/postgres.log     its log
    artifacts/          the artifact store, served over HTTP (``--serve-artifacts``)
    logs/server.log     the MLflow server's log
    credentials         the password of the cluster's owner (generated on first start)
    pgpass              the MLflow server's database login, in libpq's password-file format
    server.json         what is running: addresses, process ids

Everything is private to the user who starts it: the folder and whatever the script or the
MLflow server creates in it are made under umask 077 (files 0600, folders 0700; the top folder
0711 when PostgreSQL runs as user postgres, which must pass through it to reach pg/).

PostgreSQL listens on 127.0.0.1 only (a port of its own, chosen once and kept), with password
authentication and no Unix socket; only the MLflow server talks to it, as the user
``mlflow_app``: it owns the database ``mlflow`` and nothing else (no superuser, no CREATEDB or
CREATEROLE, no CONNECT to other databases), and may set ``session_replication_role`` (granted
on PostgreSQL 15 and later: the bulk metric path's one skipped foreign-key check,
server_store.py). Its password reaches the server through ``PGPASSFILE``, never in the backend
URI, so MLflow's start-up lines and the process list hold none; the owner's password (in
``credentials``) is used only by this module to set the database up. The MLflow server binds
to 127.0.0.1 unless ``--host`` says otherwise; a team on a shared host uses ``--host 0.0.0.0``
and ``--allowed-hosts`` (see docs/scaling-out.md). Stopping keeps the data: the next start finds it.

MLflow telemetry is off in the server (``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``) unless
the caller's environment opts in. :func:`check_tracking_server` is the quick reachability check
a client runs before a sweep (MLflow's own retries take about 4 minutes to give up).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from backprop_lab.contract import REPO_ROOT, TELEMETRY_OFF

DEFAULT_DIR = REPO_ROOT / ".tracking-server"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5050
DB_NAME = "mlflow"
DB_USER = "mlflow"  # the cluster's owner (a superuser): set-up only
APP_USER = "mlflow_app"  # what the MLflow server connects as (see the module docstring)
STATE_FILE = "server.json"
CREDENTIALS_FILE = "credentials"
PGPASS_FILE = "pgpass"
PRIVATE = 0o077  # the umask of everything the server's folder holds


class ServerError(RuntimeError):
    """The tracking server (or its database) cannot be started, stopped or reached."""


# -- reachability (what a client checks before a sweep) ---------------------------------------


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`ServerError` with a clear message if an http(s) tracking URI does not answer.

    Other URIs (SQLite, file paths, databases) are left alone. One GET of ``<uri>/health`` with a
    short timeout, with the credentials MLflow's client would send: the URI's
    ``user:password@`` or ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` as basic auth,
    ``MLFLOW_TRACKING_TOKEN`` as a bearer token. Any HTTP answer below 500 counts as reachable
    (servers behind a proxy or with authentication may answer 401/404 there); a refused
    connection, a timeout or a 5xx does not. Messages show the URI with its credentials masked.
    """
    if urlparse(uri).scheme not in ("http", "https"):
        return
    from backprop_lab.tracking.secrets import mask, without_credentials

    shown = mask(uri)
    url = without_credentials(uri).rstrip("/") + "/health"
    hint = ("Start it (`make server-start`, or `python scripts/tracking_server.py start`), "
            "or point tracking.uri / MLFLOW_TRACKING_URI at a running server.")
    request = urllib.request.Request(url, headers=auth_headers(uri))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerError(f"The MLflow tracking server {shown} is not reachable "
                          f"({mask(str(reason))}). " + hint) from None
    if status >= 500:
        raise ServerError(f"The MLflow tracking server {shown} answered "
                          f"{mask(url)} with HTTP {status} (not healthy). {hint}")


def auth_headers(uri: str, environ=os.environ) -> dict[str, str]:
    """The Authorization header MLflow's client sends to ``uri`` (none: {})."""
    import base64

    from backprop_lab.tracking.secrets import credentials

    found = credentials(uri)
    if found is None and environ.get("MLFLOW_TRACKING_USERNAME"):
        found = (environ["MLFLOW_TRACKING_USERNAME"], environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    if found is not None:
        return {"Authorization": "Basic " + base64.b64encode(":".join(found).encode()).decode()}
    if environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {environ['MLFLOW_TRACKING_TOKEN']}"}
    return {}


# -- the server's folder and state -------------------------------------------------------------


@dataclass
class ServerState:
    dir: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    pg_port: int = 0
    pg_bin: str = ""
    pid: int | None = None
    started: float | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"http://{_client_host(self.host)}:{self.port}"

    @property
    def root(self) -> Path:
        return Path(self.dir)

    @property
    def pg_data(self) -> Path:
        return self.root / "pg" / "data"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def server_log(self) -> Path:
        return self.root / "logs" / "server.log"

    @property
    def pg_log(self) -> Path:
        return self.root / "pg" / "postgres.log"

    def save(self) -> None:
        path = self.root / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        path.chmod(0o600)

    @classmethod
    def load(cls, root: Path) -> ServerState | None:
        path = root / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["dir"] = str(root)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _client_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _port_free(host: str, port: int) -> bool:
    """Nothing listens on host:port (connections closing there, in TIME_WAIT, do not count:
    servers bind with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child not reaped yet) is not alive.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return status != "Z"
    except OSError:
        return True


def _is_our_server(pid: int | None) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return _pid_alive(pid)
    return b"mlflow" in cmdline and b"server" in cmdline


# -- PostgreSQL ----------------------------------------------------------------------------------


def find_pg_bin(explicit: str | None = None) -> Path:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl, createdb).

    ``explicit``, else $PG_BIN, else the newest /usr/lib/postgresql/*/bin (Debian, Ubuntu), else
    the folder of ``initdb`` on PATH.
    """
    candidates = [explicit, os.environ.get("PG_BIN")]
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    candidates += [str(p.parent) for p in reversed(versions)]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).resolve().parent) if on_path else None)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise ServerError("PostgreSQL's server programs (initdb, pg_ctl) were not found. Install "
                      "PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`) or set PG_BIN to "
                      "the folder that holds initdb.")


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _pg_user_kwargs() -> dict:
    """subprocess arguments that run a PostgreSQL program as user postgres when we are root."""
    if not _as_root():
        return {}
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("Running as root, but there is no `postgres` user to run PostgreSQL "
                          "as (PostgreSQL refuses to run as root). Install PostgreSQL from the "
                          "system's packages, which creates it.") from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
            "env": {**_pg_env(), "HOME": pw.pw_dir, "USER": "postgres"}}


def _pg_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


def _run_pg(state: ServerState, program: str, *args: str, password: str | None = None,
            check: bool = True, timeout: float = 120,
            stdin: str | None = None) -> subprocess.CompletedProcess:
    kwargs = _pg_user_kwargs()
    env = kwargs.pop("env", _pg_env())
    if password is not None:
        env["PGPASSWORD"] = password
    result = subprocess.run([str(Path(state.pg_bin) / program), *args], env=env, cwd="/",
                            capture_output=True, text=True, timeout=timeout, input=stdin,
                            **kwargs)
    if check and result.returncode != 0:
        raise ServerError(f"{program} {' '.join(args)} failed (exit {result.returncode}):\n"
                          f"{result.stdout}{result.stderr}".rstrip())
    return result


def _prepare_pg_folder(state: ServerState) -> None:
    """Create pg/ so that PostgreSQL's user owns it (and can reach it through every parent)."""
    folder = state.pg_data.parent
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    if not _as_root():
        return
    kwargs = _pg_user_kwargs()
    os.chown(folder, kwargs["user"], kwargs["group"])
    probe = subprocess.run(["test", "-w", str(folder), "-a", "-x", str(folder)], cwd="/",
                           env=kwargs["env"], user=kwargs["user"], group=kwargs["group"],
                           extra_groups=[])
    if probe.returncode != 0:
        raise ServerError(
            f"PostgreSQL runs as user postgres, which cannot reach {folder}: a parent folder "
            "is not traversable by other users (mode 700?). Choose a --dir that user postgres "
            "can reach (e.g. under /srv or /var/lib), or make its parents mode 755.")


def _password(state: ServerState) -> str:
    """The cluster owner's password (made on first start, kept in ``credentials``, 0600)."""
    path = state.root / CREDENTIALS_FILE
    if path.exists():
        path.chmod(0o600)
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    _write_private(path, password + "\n")
    return password


def _write_private(path: Path, text: str) -> None:
    """A file only its owner can read, never readable by others on the way."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def app_password(state: ServerState) -> str:
    """The MLflow server's database password, from (or made into) its pgpass file."""
    path = state.root / PGPASS_FILE
    if path.exists():
        path.chmod(0o600)
        for line in path.read_text().splitlines():
            fields = line.split(":")
            if len(fields) == 5 and fields[3] == APP_USER:
                return fields[4]
    password = secrets.token_urlsafe(24)
    # host:port:database:user:password; any port, so a changed --pg-port keeps working.
    _write_private(path, f"127.0.0.1:*:{DB_NAME}:{APP_USER}:{password}\n")
    return password


def _setup_sql(app_pw: str, version: int) -> str:
    """The app user and its rights (idempotent: run at every start)."""
    grant_set = (f"GRANT SET ON PARAMETER session_replication_role TO {APP_USER};"
                 if version >= 150000 else "")
    return f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_USER}') THEN
    CREATE ROLE {APP_USER};
  END IF;
END $$;
ALTER ROLE {APP_USER} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  NOBYPASSRLS PASSWORD '{app_pw}';
REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC;
{grant_set}
"""


# Run in the database mlflow: the app user owns it, its schema's objects (tables made by an
# older version as the cluster's owner included) and nothing else.
OWN_DATABASE_SQL = f"""
ALTER DATABASE {DB_NAME} OWNER TO {APP_USER};
REVOKE ALL ON DATABASE {DB_NAME} FROM PUBLIC;
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n
           ON n.oid = c.relnamespace WHERE n.nspname = 'public'
           AND c.relkind IN ('r', 'S', 'v', 'm', 'p')
           AND pg_get_userbyid(c.relowner) <> '{APP_USER}' LOOP
    EXECUTE format('ALTER %s public.%I OWNER TO {APP_USER}',
                   CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                  WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                   r.relname);
  END LOOP;
  FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = 'public' AND t.typtype = 'e'
           AND pg_get_userbyid(t.typowner) <> '{APP_USER}' LOOP
    EXECUTE format('ALTER TYPE public.%I OWNER TO {APP_USER}', r.typname);
  END LOOP;
END $$;
"""


def _initdb(state: ServerState, password: str) -> None:
    pwfile = state.pg_data.parent / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    kwargs = _pg_user_kwargs()
    if kwargs:
        os.chown(pwfile, kwargs["user"], kwargs["group"])
    try:
        _run_pg(state, "initdb", "-D", str(state.pg_data), "-U", DB_USER, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
                "--no-locale", "--no-instructions")
    finally:
        pwfile.unlink(missing_ok=True)


def _pg_running(state: ServerState) -> bool:
    if not (state.pg_data / "PG_VERSION").exists():
        return False
    return _run_pg(state, "pg_ctl", "status", "-D", str(state.pg_data), check=False).returncode == 0


def start_postgres(state: ServerState, password: str) -> None:
    """initdb on first use, then start PostgreSQL on 127.0.0.1:<pg_port> and create the database."""
    _prepare_pg_folder(state)
    new = not (state.pg_data / "PG_VERSION").exists()
    if new:
        _initdb(state, password)
    if _pg_running(state):
        return
    if not _port_free("127.0.0.1", state.pg_port):
        raise ServerError(f"Port {state.pg_port} on 127.0.0.1, kept for this server's PostgreSQL, "
                          "is taken by another program. Start with --pg-port N.")
    options = (f"-c listen_addresses=127.0.0.1 -p {state.pg_port} "
               "-c unix_socket_directories='' -c max_connections=100")
    _run_pg(state, "pg_ctl", "start", "-D", str(state.pg_data), "-l", str(state.pg_log),
            "-w", "-t", "60", "-o", options)
    psql = ("psql", "-h", "127.0.0.1", "-p", str(state.pg_port), "-U", DB_USER, "-v",
            "ON_ERROR_STOP=1", "-tA")
    found = _run_pg(state, *psql, "-d", "postgres", "-c",
                    f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'", "-c",
                    "SHOW server_version_num", password=password).stdout.split()
    version = int(found[-1])
    # The app user's password goes through stdin: never on a command line.
    _run_pg(state, *psql, "-d", "postgres", "-f", "-", password=password,
            stdin=_setup_sql(app_password(state), version))
    if found[0] != "1":
        _run_pg(state, "createdb", "-h", "127.0.0.1", "-p", str(state.pg_port), "-U", DB_USER,
                "-O", APP_USER, DB_NAME, password=password)
    _run_pg(state, *psql, "-d", DB_NAME, "-f", "-", password=password, stdin=OWN_DATABASE_SQL)


def stop_postgres(state: ServerState) -> bool:
    if not _pg_running(state):
        return False
    _run_pg(state, "pg_ctl", "stop", "-D", str(state.pg_data), "-m", "fast", "-w", "-t", "60")
    return True


# -- the MLflow server ---------------------------------------------------------------------------


def backend_store_uri(state: ServerState) -> str:
    """The MLflow server's backend URI: the app user, without a password (libpq reads it from
    the file ``PGPASSFILE`` names: :func:`server_environment`)."""
    # postgresql:// means psycopg 3 to SQLAlchemy 2.1; psycopg2-binary is what the extra installs.
    # The backprop-lab+ prefix selects MLflow's SQL store with bulk metric inserts
    # (backprop_lab.tracking.server_store, registered through MLflow's entry points).
    return f"backprop-lab+postgresql+psycopg2://{APP_USER}@127.0.0.1:{state.pg_port}/{DB_NAME}"


def owner_uri(state: ServerState) -> str:
    """The cluster owner's database URI (a superuser: for set-up and tests, never the server)."""
    return (f"postgresql+psycopg2://{DB_USER}:{_password(state)}@127.0.0.1:{state.pg_port}/"
            f"{DB_NAME}")


def server_environment(state: ServerState) -> dict[str, str]:
    """The MLflow server's environment: telemetry off unless the caller opted in, the backend
    URI (not on its command line), the password file, no PG* of the caller's."""
    env = {**TELEMETRY_OFF, **{k: v for k, v in os.environ.items() if not k.startswith("PG")}}
    env["MLFLOW_BACKEND_STORE_URI"] = backend_store_uri(state)
    env["PGPASSFILE"] = str(state.root / PGPASS_FILE)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _health(uri: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=timeout) as response:  # noqa: S310
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(
    root: Path | str = DEFAULT_DIR,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    pg_port: int | None = None,
    workers: int = 1,
    allowed_hosts: str | None = None,
    extra_args: list[str] | None = None,
    pg_bin: str | None = None,
    timeout: float = 180.0,
) -> ServerState:
    """Start PostgreSQL and ``mlflow server`` (if not running yet); return the state.

    Waits until ``/health`` answers. On failure nothing is left running and the error shows the
    end of the failing program's log.
    """
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise ServerError("psycopg2 is missing: install the cluster extra "
                          "(pip install -e '.[cluster]').") from None
    root = Path(root).resolve()
    previous = ServerState.load(root)
    if previous is not None and _pid_alive(previous.pid) and _is_our_server(previous.pid):
        if _health(previous.uri):
            return previous
        raise ServerError(f"An MLflow server (pid {previous.pid}) from {root} is running but "
                          f"does not answer on {previous.uri}; stop it first.")
    old_umask = os.umask(PRIVATE)
    try:
        return _start(root, previous, host=host, port=port, pg_port=pg_port, workers=workers,
                      allowed_hosts=allowed_hosts, extra_args=extra_args, pg_bin=pg_bin,
                      timeout=timeout)
    finally:
        os.umask(old_umask)


def make_private(root: Path) -> None:
    """The server's folder and what it holds, readable by its owner only (see the module
    docstring); files made by an older version are narrowed too."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711 if _as_root() else 0o700)
    for sub in ("artifacts", "logs"):
        (root / sub).mkdir(exist_ok=True)
        (root / sub).chmod(0o700)
    for name in (CREDENTIALS_FILE, PGPASS_FILE, STATE_FILE, "logs/server.log"):
        if (root / name).exists():
            (root / name).chmod(0o600)


def _start(root: Path, previous: ServerState | None, *, host: str, port: int,
           pg_port: int | None, workers: int, allowed_hosts: str | None,
           extra_args: list[str] | None, pg_bin: str | None, timeout: float) -> ServerState:
    make_private(root)
    state = ServerState(dir=str(root), host=host, port=port, extra_args=list(extra_args or []),
                        pg_bin=str(find_pg_bin(pg_bin)))
    state.pg_port = pg_port or (previous.pg_port if previous and previous.pg_port else 0)
    if not state.pg_port:
        state.pg_port = free_port()
    if not _port_free(host, port):
        raise ServerError(f"Port {port} on {host} is taken: another program listens there. "
                          "Choose another with --port.")
    password = _password(state)
    state.save()
    pg_was_running = _pg_running(state)
    try:
        start_postgres(state, password)
    except (ServerError, subprocess.SubprocessError, OSError) as exc:
        if not pg_was_running:
            _stop_quietly(state)
        if isinstance(exc, ServerError):
            raise ServerError(f"{exc}\n--- {state.pg_log} ---\n{_log_tail(state.pg_log)}") from None
        raise ServerError(f"PostgreSQL did not start: {exc}") from None

    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
               "--workers", str(workers), "--serve-artifacts", "--app-name", "backprop-lab",
               "--artifacts-destination", str(state.artifacts)]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    command += state.extra_args
    env = server_environment(state)
    with open(state.server_log, "ab") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=root, env=env,
                                start_new_session=True, umask=PRIVATE)
    state.pid = proc.pid
    state.started = time.time()
    state.save()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(root)
            raise ServerError(f"mlflow server exited with status {proc.returncode} before "
                              f"answering.\n--- {state.server_log} ---\n"
                              f"{_log_tail(state.server_log)}")
        if _health(state.uri):
            return state
        time.sleep(0.25)
    stop(root)
    raise ServerError(f"mlflow server did not answer {state.uri}/health within {timeout:.0f} s."
                      f"\n--- {state.server_log} ---\n{_log_tail(state.server_log)}")


def _stop_quietly(state: ServerState) -> None:
    try:
        stop_postgres(state)
    except (ServerError, subprocess.SubprocessError, OSError):
        pass


def _kill_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the server's process group (it has its own session), SIGKILL after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
            except ChildProcessError:
                pass
            if not _pid_alive(pid):
                return
            time.sleep(0.1)


def stop(root: Path | str = DEFAULT_DIR) -> list[str]:
    """Stop the MLflow server and its PostgreSQL (data kept); return what was stopped."""
    root = Path(root).resolve()
    state = ServerState.load(root)
    if state is None:
        return []
    stopped = []
    if state.pid and _pid_alive(state.pid) and _is_our_server(state.pid):
        _kill_group(state.pid)
        stopped.append(f"mlflow server (pid {state.pid})")
    if state.pg_bin and stop_postgres(state):
        stopped.append(f"PostgreSQL (127.0.0.1:{state.pg_port})")
    state.pid = None
    state.started = None
    state.save()
    return stopped


def status(root: Path | str = DEFAULT_DIR) -> dict:
    """What runs from ``root``: the URI, whether it answers, the database's state."""
    root = Path(root).resolve()
    state = ServerState.load(root)
    if state is None:
        return {"dir": str(root), "configured": False, "running": False}
    server_up = bool(state.pid and _pid_alive(state.pid) and _is_our_server(state.pid))
    return {
        "dir": str(root),
        "configured": True,
        "uri": state.uri,
        "running": server_up and _health(state.uri),
        "pid": state.pid if server_up else None,
        "postgres": f"127.0.0.1:{state.pg_port}",
        "postgres_running": bool(state.pg_bin) and _pg_running(state),
        "artifacts": str(state.artifacts),
        "logs": [str(state.server_log), str(state.pg_log)],
    }
