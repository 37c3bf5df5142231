#!/usr/bin/env bash
# Integration tests (pytest -m integration): a PostgreSQL-backed MLflow server, joblib and Ray
# sweeps, a Ray cluster, all on 127.0.0.1. Installs what they need first: PostgreSQL from the
# system's packages if its server programs are missing (needs root), the cluster extra into
# .venv (via make). Called by .ci/run; runnable by hand from any folder.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true RAY_USAGE_STATS_ENABLED=0

if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null && ! command -v initdb > /dev/null
then
  if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL's server programs are missing: apt-get install postgresql (as root)" >&2
    exit 1
  fi
  echo "Installing PostgreSQL (apt-get) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq > /dev/null
  apt-get install -y -qq --no-install-recommends postgresql > /dev/null
fi

make test-integration
