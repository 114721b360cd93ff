"""Static checks of Herald's deployment files; run by scripts/validate-deploy.sh.

Each check prints one line; any failure exits 1 with every problem listed.
"""
import json
import os
import pathlib
import re
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
        [sys.executable, "-m", "check_jsonschema",
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


NATS_CONF = ROOT / "deploy/nats/nats.conf"
AUTH_CONF = ROOT / "deploy/nats/auth.conf"
# Services whose internal APIs need the bearer token.
API_SERVICES = {"herald-publish", "herald-presence", "herald-push-worker"}


def nats_users():
    """{user: password variable} of deploy/nats/auth.conf."""
    pattern = r"\{ user: ([\w-]+), password: \$(\w+), permissions: \$\w+ \}"
    return dict(re.findall(pattern, AUTH_CONF.read_text()))


def nats_variables(text):
    """What a nats-server config reads from the environment: its `$NAMES`
    outside comments and quoted subjects, less the blocks it defines."""
    defined = set(re.findall(r"^\s*(\w+) = \{", text, re.M))
    text = re.sub(r"#.*", "", re.sub(r'"[^"]*"', "", text))
    return set(re.findall(r"\$(\w+)", text)) - defined


def required(value):
    """The variable of a `${VAR:?message}` interpolation, else None."""
    match = re.fullmatch(r"\$\{(\w+):\?[^}]*\}", str(value))
    return match and match.group(1)


def published(port):
    """(host address or None, text) of one Compose port mapping."""
    if isinstance(port, dict):
        return port.get("host_ip"), str(port)
    parts = str(port).split(":")
    return (parts[0] if len(parts) == 3 else None), str(port)


def check_compose_lockdown():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    users = nats_users()
    if not users:
        yield "deploy/nats/auth.conf names no users"
    if "include ./auth.conf" not in NATS_CONF.read_text():
        yield "deploy/nats/nats.conf does not include auth.conf"
    wanted = nats_variables(NATS_CONF.read_text()) | nats_variables(AUTH_CONF.read_text())
    for name, service in services.items():
        # Only the load balancer faces the network; consoles are this host's.
        for host, text in map(published, service.get("ports", [])):
            if name != "lb" and host != "127.0.0.1":
                yield f"{name}: publishes {text} on every interface; bind it to 127.0.0.1 or drop it"
        env = service.get("environment", {})
        if str(service.get("image", "")).startswith("nats:"):
            mounts = {v.split(":")[0]: v.split(":")[1] for v in service.get("volumes", [])}
            for source, target in (("./deploy/nats/nats.conf", "/etc/nats/nats.conf"),
                                   ("./deploy/nats/auth.conf", "/etc/nats/auth.conf")):
                if mounts.get(source) != target:
                    yield f"{name}: does not mount {source} at {target}"
            for variable in sorted(wanted - env.keys()):
                yield f"{name}: nats-server reads ${variable}, which its environment lacks"
            for variable in sorted(v for v in wanted if v.endswith("_PASSWORD")):
                if required(env.get(variable)) != variable:
                    yield f"{name}: {variable} must be ${{{variable}:?...}} (no default)"
        if "build" not in service:
            continue
        command = service.get("command", [""])[0]
        user = env.get("HERALD_NATS_USER")
        if user not in users:
            yield f"{name}: HERALD_NATS_USER {user!r} is no user of deploy/nats/auth.conf"
        elif required(env.get("HERALD_NATS_PASSWORD")) != users[user]:
            yield f"{name}: HERALD_NATS_PASSWORD must be ${{{users[user]}:?...}}, {user}'s password"
        elif user != command:
            yield f"{name}: runs {command} as NATS user {user}"
        if command in API_SERVICES and required(env.get("HERALD_API_TOKEN")) != "HERALD_API_TOKEN":
            yield f"{name}: HERALD_API_TOKEN must be ${{HERALD_API_TOKEN:?...}}"
        if command == "herald-edge" and required(env.get("HERALD_JWT_SECRET")) != "HERALD_JWT_SECRET":
            yield f"{name}: HERALD_JWT_SECRET must be ${{HERALD_JWT_SECRET:?...}}"


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
    retried = annotations.get("nginx.ingress.kubernetes.io/proxy-next-upstream", "").split()
    if not {"error", "http_503"} <= set(retried):
        yield "Ingress herald-edge: a stopping or full edge's refusal is not retried on another edge"
    snippet = annotations.get("nginx.ingress.kubernetes.io/configuration-snippet", "")
    fallback = annotations.get("nginx.ingress.kubernetes.io/server-snippet", "")
    if "Herald-Refusals status" not in snippet or "@herald_refused" not in fallback:
        yield "Ingress herald-edge: an EventSource refused by every edge would get an error it never retries"
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


def secret_refs(container):
    """{env name: (secret, key)} of a container."""
    refs = {}
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs[env["name"]] = (ref["name"], ref["key"])
    return refs


def check_k8s_nats():
    docs = [doc for _, doc in k8s_documents(K8S / "base")]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    config_maps = by_kind.get("ConfigMap", {})
    auth = config_maps.get("nats-auth", {}).get("data", {}).get("auth.conf")
    if auth != AUTH_CONF.read_text():
        yield "ConfigMap nats-auth's auth.conf differs from deploy/nats/auth.conf"
    nats_conf = config_maps["nats-config"]["data"]["nats.conf"]
    if "include ./auth.conf" not in nats_conf:
        yield "ConfigMap nats-config's nats.conf does not include auth.conf"
    nats = by_kind["StatefulSet"]["nats"]["spec"]["template"]["spec"]
    volume = next(v for v in nats["volumes"] if v["name"] == "config")
    sources = {s.get("configMap", {}).get("name") for s in volume.get("projected", {}).get("sources", [])}
    if not {"nats-config", "nats-auth"} <= sources:
        yield "StatefulSet nats: volume config must project nats-config and nats-auth together"
    container = nats["containers"][0]
    env = {e["name"] for e in container.get("env", [])}
    for variable in sorted((nats_variables(nats_conf) | nats_variables(auth)) - env):
        yield f"StatefulSet nats: nats-server reads ${variable}, which its environment lacks"
    nats_secrets = secret_refs(container)
    users = nats_users()
    for name, deployment in by_kind.get("Deployment", {}).items():
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            user = next((e.get("value") for e in c.get("env", []) if e["name"] == "HERALD_NATS_USER"), None)
            if user not in users:
                yield f"{name}: HERALD_NATS_USER {user!r} is no user of deploy/nats/auth.conf"
                continue
            if c["command"][0] != user:
                yield f"{name}: runs {c['command'][0]} as NATS user {user}"
            mine = secret_refs(c).get("HERALD_NATS_PASSWORD")
            if mine is None or mine != nats_secrets.get(users[user]):
                yield f"{name}: HERALD_NATS_PASSWORD is not the secret NATS reads as ${users[user]}"
            if user in API_SERVICES and "HERALD_API_TOKEN" not in secret_refs(c):
                yield f"{name}: HERALD_API_TOKEN does not come from a secret"
    for name, service in by_kind.get("Service", {}).items():
        if service["spec"].get("type", "ClusterIP") != "ClusterIP":
            yield f"Service {name} is {service['spec']['type']}: only the Ingress faces clients"
    # A route sees every message: only NATS nodes may reach the route port.
    for name, policy in by_kind.get("NetworkPolicy", {}).items():
        for rule in policy["spec"].get("ingress", []):
            if any(p.get("port") == 6222 for p in rule.get("ports", [])):
                for peer in rule.get("from", []):
                    if peer.get("podSelector", {}).get("matchLabels") != {"app.kubernetes.io/name": "nats"}:
                        yield f"NetworkPolicy {name}: lets {peer} reach the NATS route port"


def nats_server_accepts(name, nats_conf, env, auth=None):
    """`nats-server -t` on `nats_conf` beside `auth` (deploy/nats/auth.conf
    by default), with `env` (dummy secrets): the syntax, and every
    variable resolved."""
    binary = os.environ.get("NATS_SERVER")
    if not binary:
        yield "no nats-server to check the NATS configs with (scripts/nats-server.sh)"
        return
    if os.sep in binary:
        binary = os.path.abspath(binary)  # it runs in a temporary directory
    with tempfile.TemporaryDirectory() as tmp:
        (pathlib.Path(tmp) / "nats.conf").write_text(nats_conf)
        (pathlib.Path(tmp) / "auth.conf").write_text(auth or AUTH_CONF.read_text())
        result = subprocess.run([binary, "-c", "nats.conf", "-t"], cwd=tmp, env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            yield f"{name}: nats-server refuses it: {(result.stdout + result.stderr).strip()}"


# A secret as the deployment docs make them: letters and digits.
DUMMY_SECRET = "h0123456789abcdef"


def check_nats_configs():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["nats-1"]["environment"]
    interpolated = {k: re.sub(r"\$\{[^}]*\}", DUMMY_SECRET, str(v)) for k, v in env.items()}
    yield from nats_server_accepts("deploy/nats/nats.conf (compose)", NATS_CONF.read_text(),
                                   interpolated)
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in k8s_documents(K8S / "base")}
    container = docs[("StatefulSet", "nats")]["spec"]["template"]["spec"]["containers"][0]
    k8s_env = {}
    for e in container["env"]:
        value = e.get("value", DUMMY_SECRET if "secretKeyRef" in e.get("valueFrom", {}) else "nats-0")
        k8s_env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: k8s_env.get(m.group(1), ""), value)
    nats_conf = docs[("ConfigMap", "nats-config")]["data"]["nats.conf"]
    yield from nats_server_accepts("ConfigMap nats-config", nats_conf, k8s_env)


def check_regions():
    """Each region's overlay (deploy/k8s/overlays/regions/<region>),
    rendered: NATS's cluster and gateway bear the region's name, Herald is
    told the region, every variable nats.conf and auth.conf read is in the
    pod's environment, and nats-server accepts the two together."""
    regions = sorted(p.parent for p in (K8S / "overlays/regions").glob("*/nats-config.yaml"))
    if not regions:
        yield "no region overlay under deploy/k8s/overlays/regions"
    for directory in regions:
        region = directory.name
        docs, error = render(directory)
        if error:
            yield f"{region}: {error}"
            continue
        by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        nats_conf = by[("ConfigMap", "nats-config")]["data"]["nats.conf"]
        auth = by[("ConfigMap", "nats-auth")]["data"]["auth.conf"]
        for block in ("cluster", "gateway"):
            if not re.search(block + r" \{\s*name: " + region + r"\n", nats_conf):
                yield f"{region}: nats.conf's {block} is not named {region}"
        config = by[("ConfigMap", "herald-config")]["data"]
        if config.get("HERALD_REGION") != region or region not in config.get("HERALD_REGIONS", "").split(","):
            yield f"{region}: herald-config does not give HERALD_REGION {region} among HERALD_REGIONS"
        if "herald.u.*.*" not in auth:
            yield f"{region}: nats-auth does not allow the regional subjects"
        container = by[("StatefulSet", "nats")]["spec"]["template"]["spec"]["containers"][0]
        env = {}
        for e in container["env"]:
            value = e.get("value", DUMMY_SECRET if "secretKeyRef" in e.get("valueFrom", {}) else "nats-0")
            # Kubernetes expands $(NAME) only for variables listed before.
            for used in re.findall(r"\$\((\w+)\)", value):
                if used not in env:
                    yield f"{region}: {e['name']} uses $({used}), which is not defined before it"
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""), value)
        for variable in sorted((nats_variables(nats_conf) | nats_variables(auth)) - set(env)):
            yield f"{region}: nats-server reads ${variable}, which its environment lacks"
        yield from nats_server_accepts(f"{region}'s NATS", nats_conf, env, auth)


def kustomizations():
    """Every directory under deploy/ that holds a kustomization (not a
    component: those are rendered by the kustomizations that use them)."""
    paths = (ROOT / "deploy").rglob("kustomization.yaml")
    return sorted(p.parent for p in paths if yaml.safe_load(p.read_text()).get("kind") != "Component")


def render(directory):
    """(documents, error) of `kubectl kustomize directory`."""
    kubectl = os.environ.get("KUBECTL", "kubectl")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        return [], (result.stdout + result.stderr).strip()
    return [d for d in yaml.safe_load_all(result.stdout) if d], None


def operator_models():
    """The Prometheus Operator's ServiceMonitor and PrometheusRule as
    pydantic models generated from its CRD schemas, or None."""
    try:
        from cloudcoil.models.prometheus_operator import v1
    except ImportError:
        return None
    return {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}


def strict_errors(doc, version, models):
    """Why `doc` fails its schema: the Kubernetes one (unknown fields
    refused), or its CRD's for the operator's kinds, where a field the
    model does not know is dropped on the way through and so shows up as a
    difference."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if doc.get("kind") in OPERATOR_KINDS:
        if models is None:
            return []
        try:
            model = models[doc["kind"]].model_validate_json(json.dumps(doc), strict=True)
        except Exception as e:  # pydantic.ValidationError, listing every field
            return [f"{name}: {e}".replace("\n", "; ")]
        kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        return [f"{name}: fields its CRD does not have: {path}" for path in dropped(doc, kept)]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{name}: {e.message} at {list(e.path)}"]
    return []


def dropped(given, kept, path=""):
    """Paths in `given` missing from `kept`."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                yield f"{path}.{key}"
            else:
                yield from dropped(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept)):
            yield from dropped(a, b, f"{path}[{i}]")


def check_k8s_rendered(models):
    """Each kustomization as `kubectl apply -k` would send it."""
    version = kubernetes_validate.latest_version()
    for directory in kustomizations():
        where = directory.relative_to(ROOT)
        docs, error = render(directory)
        if error:
            yield f"{where}: kubectl kustomize fails: {error}"
            continue
        if not docs:
            yield f"{where}: renders nothing"
        for doc in docs:
            yield from (f"{where}: {e}" for e in strict_errors(doc, version, models))
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        rendered_images = {c["image"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                           for c in d["spec"]["template"]["spec"]["containers"]}
        for image in kustomization.get("images", []):
            wanted = f"{image.get('newName', image['name'])}:{image.get('newTag', 'latest')}"
            if wanted not in rendered_images:
                yield f"{where}: no container runs {wanted}, which its images: names"


def check_validators_catch_mistakes(models):
    """The strict checks above refuse what they must: a green run means
    the manifests are right, not that the checker lets anything through."""
    version = kubernetes_validate.latest_version()
    bad = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "typo"},
         "spec": {"ports": [{"port": 80}], "selectr": {"app": "x"}}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
         "metadata": {"name": "unknown-field"},
         "spec": {"selector": {}, "endpoints": [{"port": "admin", "intervall": "15s"}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
         "metadata": {"name": "no-selector"}, "spec": {"endpoints": [{"port": "admin"}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
         "metadata": {"name": "wrong-type"},
         "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": 5}]}]}},
    ]
    for doc in bad:
        if doc["kind"] in OPERATOR_KINDS and models is None:
            continue
        if not strict_errors(doc, version, models):
            yield f"{doc['kind']}/{doc['metadata']['name']} passed, and must not"


def check_k8s_overlays():
    base = {(doc["kind"], doc["metadata"]["name"]) for _, doc in k8s_documents(K8S / "base")}
    images = {c["image"].split(":")[0] for _, doc in k8s_documents(K8S / "base")
              if doc["kind"] in ("Deployment", "StatefulSet")
              for c in doc["spec"]["template"]["spec"]["containers"]}
    for overlay in sorted(p.parent for p in (K8S / "overlays").rglob("kustomization.yaml")):
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        for resource in kustomization.get("resources", []) + kustomization.get("components", []):
            if not (overlay / resource).exists():
                yield f"{overlay.name}: resource {resource} does not exist"
        for image in kustomization.get("images", []):
            if image["name"] not in images:
                yield f"{overlay.name}: image {image['name']} is used by nothing"
        for replicas in kustomization.get("replicas", []):
            if ("Deployment", replicas["name"]) not in base:
                yield f"{overlay.name}: replicas for unknown Deployment {replicas['name']}"
        for patch in kustomization.get("patches", []):
            target = patch.get("target")
            if target is None:
                target = yaml.safe_load((overlay / patch["path"]).read_text())
                target = {"kind": target["kind"], "name": target["metadata"]["name"]}
            if (target["kind"], target["name"]) not in base:
                yield f"{overlay.name}: a patch of {target['kind']} {target['name']} patches nothing in the base"


check("docker-compose.yml against the Compose specification", check_compose())
check("Prometheus config and alert rules (promtool)", check_prometheus())
check("Grafana provisioning, dashboard and its queries", check_grafana())
check("Kubernetes manifests against the Kubernetes schemas", check_k8s_schemas())
check("Kubernetes references: selectors, probes, PDBs, HPA, ingress, monitoring", check_k8s_references())
check("Kubernetes overlays refer to the base", check_k8s_overlays())
MODELS = operator_models()
if MODELS is None:
    print("skip  ServiceMonitor and PrometheusRule against their CRD schemas: "
          "cloudcoil-models-prometheus-operator is not installed "
          "(pip install -r deploy/validate-requirements.txt)")
check("every kustomization rendered (kubectl kustomize), strictly against the Kubernetes schemas"
      + ("" if MODELS is None else " and the Prometheus Operator's CRDs"),
      check_k8s_rendered(MODELS))
check("the strict checks refuse unknown fields, missing ones and wrong types",
      check_validators_catch_mistakes(MODELS))
check("docker-compose.yml: NATS locked down, no port on the host but the load balancer's",
      check_compose_lockdown())
check("Kubernetes: NATS users and secrets agree with deploy/nats/auth.conf", check_k8s_nats())
check("nats-server accepts the compose and Kubernetes NATS configs", check_nats_configs())
check("each region's overlay: named cluster and gateway, Herald's region, NATS accepts it", check_regions())
sys.exit(1 if problems else 0)
