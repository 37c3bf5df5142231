"""Start, stop or inspect the shared MLflow tracking server (PostgreSQL + artifact folder).

    python scripts/tracking_server.py start                   # http://127.0.0.1:5050
    python scripts/tracking_server.py start --port 5051 --dir /srv/mlflow
    python scripts/tracking_server.py status
    python scripts/tracking_server.py stop                    # data kept for the next start

Team use on a shared host (see docs/scaling-out.md): bind to the host's address and allow its name,
    python scripts/tracking_server.py start --dir /srv/mlflow --host 0.0.0.0 \\
        --allowed-hosts "mlhost:5050"
Then everyone trains with tracking.uri=http://mlhost:5050 (or MLFLOW_TRACKING_URI).

Needs PostgreSQL's server programs (Debian/Ubuntu: apt-get install postgresql) and the cluster
extra (pip install -e '.[cluster]'). As root, PostgreSQL runs as user postgres. All the logic
is in backprop_lab.tracking.server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

try:
    from backprop_lab.tracking import server
except ModuleNotFoundError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from backprop_lab.tracking import server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--dir", default=os.environ.get("BACKPROP_LAB_SERVER_DIR",
                                                        str(server.DEFAULT_DIR)),
                        help="folder of the database, artifacts, logs (default: %(default)s)")
    parser.add_argument("--host", default=server.DEFAULT_HOST,
                        help="address the MLflow server binds to (default: %(default)s)")
    parser.add_argument("--port", type=int, default=server.DEFAULT_PORT,
                        help="port of the MLflow server (default: %(default)s)")
    parser.add_argument("--pg-port", type=int, default=None,
                        help="PostgreSQL's port on 127.0.0.1 (default: a free one, then kept)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server worker processes (default: 1; each extra worker adds "
                             "about 40 ms to every keep-alive request here)")
    parser.add_argument("--allowed-hosts", default=None,
                        help="Host headers the server accepts besides localhost and private "
                             "addresses (mlflow server --allowed-hosts)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds to wait for the server to answer (default: %(default)s)")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "start":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "start":
            state = server.start(args.dir, host=args.host, port=args.port, pg_port=args.pg_port,
                                 workers=args.workers, allowed_hosts=args.allowed_hosts,
                                 extra_args=extra, timeout=args.timeout)
            print(f"MLflow tracking server on {state.uri} (pid {state.pid})\n"
                  f"  runs:      PostgreSQL on 127.0.0.1:{state.pg_port}, {state.pg_data}\n"
                  f"  artifacts: {state.artifacts} (served over HTTP)\n"
                  f"  logs:      {state.server_log}\n"
                  f"Train against it:  python train.py tracking.uri={state.uri}\n"
                  f"              or:  export MLFLOW_TRACKING_URI={state.uri}\n"
                  f"Stop it:           python scripts/tracking_server.py stop --dir {state.dir}")
        elif args.command == "stop":
            stopped = server.stop(args.dir)
            print("Stopped " + ", ".join(stopped) if stopped
                  else f"Nothing was running from {Path(args.dir).resolve()}")
        else:
            info = server.status(args.dir)
            print(json.dumps(info, indent=1))
            return 0 if info["running"] else 3
    except server.ServerError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
