"""Static checks of Herald's deployment files; run by scripts/validate-deploy.sh.

Each check prints one line; any failure exits 1 with every problem listed.
"""
import json
import pathlib
import subprocess
import sys
import tempfile

import kubernetes_validate
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


K8S = ROOT / "deploy/k8s"
# Kinds from the Prometheus Operator's CRDs, not in the Kubernetes schemas:
# checked against what they refer to instead.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def k8s_documents(directory):
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def check_k8s_schemas():
    version = kubernetes_validate.latest_version()
    for path, doc in k8s_documents(K8S / "base"):
        if doc["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            yield f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}"


def check_k8s_references():
    docs = [doc for _, doc in k8s_documents(K8S / "base")]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    base = yaml.safe_load((K8S / "base/kustomization.yaml").read_text())
    for resource in base["resources"]:
        if not (K8S / "base" / resource).exists():
            yield f"base kustomization lists {resource}, which does not exist"
    listed = set(base["resources"])
    for path in (K8S / "base").glob("*.yaml"):
        if path.name != "kustomization.yaml" and path.name not in listed:
            yield f"{path.name} is not in the base kustomization"
    workloads = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
    services = by_kind.get("Service", {})
    for name, workload in workloads.items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        if workload["spec"]["selector"]["matchLabels"].items() - labels.items():
            yield f"{name}: selector does not match its pods"
        for container in workload["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None and port not in ports:
                    yield f"{name}: {probe} uses unknown port {port}"
    for name, service in services.items():
        selected = [w for w in workloads.values()
                    if not service["spec"]["selector"].items()
                    - w["spec"]["template"]["metadata"]["labels"].items()]
        if not selected:
            yield f"Service {name} selects no pods"
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        target = workloads.get(name)
        if target and pdb["spec"].get("minAvailable", 0) >= target["spec"].get("replicas", 1):
            yield f"PodDisruptionBudget {name} would block every eviction"
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        if hpa["spec"]["scaleTargetRef"]["name"] not in workloads:
            yield f"HPA {hpa['metadata']['name']} targets an unknown workload"
    edge = workloads["herald-edge"]["spec"]["template"]["spec"]
    if edge["terminationGracePeriodSeconds"] <= 5 + 30:
        yield "herald-edge: terminationGracePeriodSeconds must exceed preStop (5 s) + --drain-grace (30 s)"
    ingress = by_kind["Ingress"]["herald-edge"]
    annotations = ingress["metadata"]["annotations"]
    if annotations.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off":
        yield "Ingress herald-edge buffers responses: SSE events would be held back"
    if int(annotations.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60")) < 60:
        yield "Ingress herald-edge: read timeout below the heartbeat"
    for monitor in by_kind.get("ServiceMonitor", {}).values():
        wanted = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services.values()
                   if not wanted.items() - s["metadata"].get("labels", {}).items()]
        port = monitor["spec"]["endpoints"][0]["port"]
        herald = [s for s in matched if s["metadata"]["name"].startswith("herald-")]
        if not herald or any(port not in {p["name"] for p in s["spec"]["ports"]} for s in herald):
            yield f"ServiceMonitor {monitor['metadata']['name']}: no Herald service with port {port}"
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    operator_rules = by_kind["PrometheusRule"]["herald"]["spec"]
    if operator_rules != rules:
        yield "PrometheusRule herald differs from deploy/prometheus/alerts.yml"
    with tempfile.TemporaryDirectory() as tmp:
        local = pathlib.Path(tmp) / "rules.yml"
        local.write_text(yaml.safe_dump(operator_rules))
        yield from promtool("check", "rules", str(local))


def check_k8s_overlays():
    base = {(doc["kind"], doc["metadata"]["name"]) for _, doc in k8s_documents(K8S / "base")}
    images = {c["image"].split(":")[0] for _, doc in k8s_documents(K8S / "base")
              if doc["kind"] in ("Deployment", "StatefulSet")
              for c in doc["spec"]["template"]["spec"]["containers"]}
    for overlay in sorted((K8S / "overlays").iterdir()):
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        for resource in kustomization.get("resources", []):
            if not (overlay / resource).exists():
                yield f"{overlay.name}: resource {resource} does not exist"
        for image in kustomization.get("images", []):
            if image["name"] not in images:
                yield f"{overlay.name}: image {image['name']} is used by nothing"
        for replicas in kustomization.get("replicas", []):
            if ("Deployment", replicas["name"]) not in base:
                yield f"{overlay.name}: replicas for unknown Deployment {replicas['name']}"
        for patch in kustomization.get("patches", []):
            doc = yaml.safe_load((overlay / patch["path"]).read_text())
            if (doc["kind"], doc["metadata"]["name"]) not in base:
                yield f"{overlay.name}: {patch['path']} patches nothing in the base"


check("docker-compose.yml against the Compose specification", check_compose())
check("Prometheus config and alert rules (promtool)", check_prometheus())
check("Grafana provisioning, dashboard and its queries", check_grafana())
check("Kubernetes manifests against the Kubernetes schemas", check_k8s_schemas())
check("Kubernetes references: selectors, probes, PDBs, HPA, ingress, monitoring", check_k8s_references())
check("Kubernetes overlays refer to the base", check_k8s_overlays())
sys.exit(1 if problems else 0)
