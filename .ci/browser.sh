#!/usr/bin/env bash
# The browser test (pytest -m browser): the MLflow UI on 127.0.0.1 in headless Chromium.
# Installs Debian's chromium if missing (needs root; playwright's own browser download is not
# used) and the browser extra into .venv (via make). Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true RAY_USAGE_STATS_ENABLED=0

if ! command -v chromium > /dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Chromium is missing: apt-get install chromium (as root)" >&2
    exit 1
  fi
  echo "Installing chromium (apt-get) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq > /dev/null
  apt-get install -y -qq --no-install-recommends chromium > /dev/null
fi

make test-browser
