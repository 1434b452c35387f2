#!/usr/bin/env bash
# Start or stop the MLflow tracking server on PostgreSQL (see kryflow.tracking.start_server).
#   scripts/mlflow_server.sh start [--host 127.0.0.1] [--port 5000] [--dir .mlflow-server]
#   scripts/mlflow_server.sh stop  [--dir .mlflow-server]
# Binds to 127.0.0.1 unless --host says otherwise; for cluster nodes use --host 0.0.0.0
# --allowed-hosts "$(hostname):*" and export MLFLOW_TRACKING_URI=http://$(hostname):5000 in jobs.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
kryflow="${KRYFLOW:-$here/.venv/bin/kryflow}"
[[ -x "$kryflow" ]] || kryflow=kryflow
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  echo "PostgreSQL server not found: apt-get install -y postgresql" >&2
  exit 2
fi
cmd="${1:?usage: $0 start|stop [options]}"; shift
exec "$kryflow" tracking server "$cmd" "$@"
