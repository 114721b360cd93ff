"""Static checks of Herald's deployment files; run by scripts/validate-deploy.sh.

Each check prints one line; any failure exits 1 with every problem listed.
"""
import json
import pathlib
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
problems = []


def check(name, errors):
    errors = list(errors)
    print(f"{'ok' if not errors else 'FAIL'}  {name}")
    for e in errors:
        print(f"      {e}")
    problems.extend(errors)


def check_compose():
    compose_file = ROOT / "docker-compose.yml"
    result = subprocess.run(
        [pathlib.Path(sys.executable).parent / "check-jsonschema",
         "--builtin-schema", "vendor.compose-spec", str(compose_file)],
        capture_output=True, text=True)
    if result.returncode != 0:
        yield (result.stdout + result.stderr).strip()
    compose = yaml.safe_load(compose_file.read_text())
    services = compose.get("services", {})
    for name, service in services.items():
        if "image" not in service and "build" not in service:
            yield f"{name}: neither image nor build"
        for dependency in service.get("depends_on", []):
            if dependency not in services:
                yield f"{name}: depends on unknown service {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and not (ROOT / source).exists():
                yield f"{name}: mounts {source}, which does not exist"


def promtool(*args):
    result = subprocess.run(["promtool", *args], capture_output=True, text=True)
    if result.returncode != 0:
        yield f"promtool {' '.join(args)}: {result.stdout}{result.stderr}".strip()


def check_prometheus():
    rules = ROOT / "deploy/prometheus/alerts.yml"
    yield from promtool("check", "rules", str(rules))
    # The config names the rules at their path in the container.
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["rule_files"] = [str(rules)]
    with tempfile.TemporaryDirectory() as tmp:
        local = pathlib.Path(tmp) / "prometheus.yml"
        local.write_text(yaml.safe_dump(config))
        yield from promtool("check", "config", str(local))


def check_grafana():
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/herald.yaml").read_text())
    if provider["providers"][0]["options"]["path"] != "/var/lib/grafana/dashboards":
        yield "the dashboard provider does not read where compose mounts the dashboards"
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/herald.json").read_text())
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dashboard:
            yield f"dashboard: no {key}"
    ids = [p["id"] for p in dashboard["panels"]]
    if len(ids) != len(set(ids)):
        yield "dashboard: panel ids repeat"
    recording = []
    for panel in dashboard["panels"]:
        if panel["datasource"]["uid"] not in uids:
            yield f"panel {panel['title']!r}: unknown datasource {panel['datasource']['uid']}"
        if not panel.get("targets"):
            yield f"panel {panel['title']!r}: no query"
        for target in panel.get("targets", []):
            recording.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}",
                              "expr": target["expr"]})
    # promtool parses every query as a recording rule's expression.
    with tempfile.TemporaryDirectory() as tmp:
        queries = pathlib.Path(tmp) / "dashboard-queries.yml"
        queries.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}))
        yield from promtool("check", "rules", str(queries))


check("docker-compose.yml against the Compose specification", check_compose())
check("Prometheus config and alert rules (promtool)", check_prometheus())
check("Grafana provisioning, dashboard and its queries", check_grafana())
sys.exit(1 if problems else 0)
