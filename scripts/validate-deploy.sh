#!/usr/bin/env bash
# Static checks of the deployment files, standing in for `docker compose up`
# (no Docker engine runs on the development machines): docker-compose.yml
# against the Compose specification's JSON schema, Prometheus's config and
# alert rules with promtool, the Grafana dashboard and its queries, the
# NATS lockdown (users, secrets, ports) and the NATS configs with nats-server.
# Installs what it lacks: a Python venv under .tools/ with pinned packages,
# and promtool (Debian's `prometheus` package) when root.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.tools/venv
if [[ ! -x "$venv/bin/python" ]]; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    else
      echo "error: Python's venv is missing; run: sudo apt-get install -y python3-venv" >&2
      exit 1
    fi
  fi
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import check_jsonschema, kubernetes_validate, yaml' 2>/dev/null; then
  echo "installing the deployment validators into $venv" >&2
  "$venv/bin/pip" install -q -r deploy/validate-requirements.txt >&2
fi

if ! command -v promtool >/dev/null; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing promtool (Debian package prometheus)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
  else
    echo "error: promtool is missing; run: sudo apt-get install -y --no-install-recommends prometheus" >&2
    exit 1
  fi
fi

# nats-server checks the NATS configs (deploy/nats, the Kubernetes ConfigMaps).
NATS_SERVER="$(scripts/nats-server.sh)"
export NATS_SERVER

exec "$venv/bin/python" deploy/validate.py
