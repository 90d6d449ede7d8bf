"""The deployment artifacts in deploy/ stay true to the gateway they deploy.

Nothing here can run Docker or Kubernetes; instead every file is parsed and checked against the
code: the variables it sets are real settings, the configuration loads, ports and probe paths
are the app's (probes and scrapes on the admin port, the ingress on the public port only), each
pod keeps its spool on a volume claim of its own, every metric a dashboard or alert queries is
one the app exports, and the image runs unprivileged. Each check is a function of the files, so
a wrong file fails it.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.settings import CONFIG_ENV, ENV_PREFIX, Settings, load_settings, sections

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DEPLOYMENT_VARIANT = K8S / "variants" / "deployment-emptydir.yaml"
CONFIG = DEPLOY / "gateway.toml"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD = DEPLOY / "grafana" / "gateway-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
# What the admin port serves (and the public port does not).
OPERATIONAL = ("/healthz", "/readyz", "/metrics", "/openapi.json")

# Metrics about the gateway that it cannot export itself (it is down, or Kubernetes keeps it out
# of the Service): the only names besides its own that the alert rules may use.
EXTERNAL_METRICS = {
    "up": "Prometheus, for every scrape target",
    "kube_pod_status_ready": "kube-state-metrics",
}
# The exposition suffixes of each metric type (a counter `x` is scraped as `x_total`).
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


# --- reading the files -------------------------------------------------------------------------


def deploy_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in suffixes)


def documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def compose() -> dict[str, Any]:
    (doc,) = documents(DEPLOY / "compose.yaml")
    assert isinstance(doc, dict)
    return doc


def k8s_objects() -> list[dict[str, Any]]:
    """The Kubernetes objects kustomization.yaml applies (deploy/k8s, not its variants)."""
    objects = []
    for path in deploy_files(".yaml"):
        if path.parent == K8S and path.name != "kustomization.yaml":
            objects += documents(path)
    return objects


def manifests() -> dict[str, dict[str, Any]]:
    """The Kubernetes objects of deploy/k8s by kind (one object of each kind), Services aside."""
    by_kind: dict[str, dict[str, Any]] = {}
    for doc in k8s_objects():
        if doc["kind"] != "Service":
            assert doc["kind"] not in by_kind, f"a second {doc['kind']}"
            by_kind[doc["kind"]] = doc
    return by_kind


def services() -> tuple[dict[str, Any], dict[str, Any]]:
    """The Service traffic goes through, and the StatefulSet's headless one."""
    found = [doc for doc in k8s_objects() if doc["kind"] == "Service"]
    (public,) = [s for s in found if s["spec"].get("clusterIP") != "None"]
    (headless,) = [s for s in found if s["spec"].get("clusterIP") == "None"]
    return public, headless


def pod_template(workload: dict[str, Any] | None = None) -> dict[str, Any]:
    template = (workload or manifests()["StatefulSet"])["spec"]["template"]
    assert isinstance(template, dict)
    return template


def gateway_container(workload: dict[str, Any] | None = None) -> dict[str, Any]:
    (container,) = pod_template(workload)["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def k8s_settings(container: dict[str, Any] | None = None) -> Settings:
    """The settings the gateway container loads: gateway.toml and its environment."""
    env = {e["name"]: e["value"] for e in (container or gateway_container())["env"]}
    return load_settings(CONFIG, environ={**env, **dummy_secrets()})


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    return int(named.get(str(port), port))


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def kafka_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if str(service.get("image", "")).startswith("apache/kafka:")
    }


def dockerfile_final_stage() -> list[str]:
    """The instructions of the last stage, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    instructions = re.split(r"\n(?=[A-Z]+\s)", "\n".join(lines).replace("\\\n", " "))
    starts = [i for i, ins in enumerate(instructions) if ins.startswith("FROM ")]
    return [" ".join(ins.split()) for ins in instructions[starts[-1] :]]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in dockerfile_final_stage():
        if instruction.startswith("ENV "):
            for pair in instruction[4:].split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


# --- what the gateway really has ------------------------------------------------------------------


def known_variables() -> set[str]:
    """Every variable the settings read: GATEWAY_<SECTION>_<FIELD> (the gateway's sections and
    the vendors') and GATEWAY_CONFIG."""
    names = {CONFIG_ENV}
    for name, section in sections().items():
        names |= {f"{ENV_PREFIX}{name}_{f.name}".upper() for f in fields(section.kind)}
    return names


def secret_variables() -> list[str]:
    """The variables deploy/gateway.toml names in its credentials' secret_env entries."""
    raw = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    return [c["secret_env"] for t in raw.get("tenants", []) for c in t.get("credentials", [])]


def dummy_secrets() -> dict[str, str]:
    # Distinct per variable (a credential shared by two tenants is refused) and 32 bytes long
    # (a Pearson secret must be an AES key).
    return {name: hashlib.sha256(name.encode()).hexdigest()[:32] for name in secret_variables()}


def unknown_variables(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith(ENV_PREFIX) and n not in known_variables()}


@pytest.fixture(scope="module")
def app_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """deploy/gateway.toml with dummy secrets and a scratch state directory."""
    state = tmp_path_factory.mktemp("state")
    env = {**dummy_secrets(), "GATEWAY_SERVER_STATE_DIR": str(state)}
    return load_settings(CONFIG, environ=env)


async def status(settings: Settings, port: int, path: str) -> int:
    """What the app built from `settings` answers a GET of `path` that came in on `port` (the
    app tells its ports apart by the local port of the request)."""
    # ASGITransport runs no lifespan (Kafka, the spool): routing is complete without it.
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://gateway:{port}") as client:
        return (await client.get(path)).status_code


@pytest.fixture(scope="module")
async def exported_metrics(app_settings: Settings) -> set[str]:
    """Every sample name /metrics of the app built from the deployed configuration can carry."""
    # ASGITransport runs no lifespan (Kafka, the spool): the registry is complete without it.
    transport = httpx.ASGITransport(app=create_app(app_settings))
    admin = f"http://gateway:{app_settings.server.admin_port}"
    async with httpx.AsyncClient(transport=transport, base_url=admin) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    names: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


# --- PromQL --------------------------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values() query) selects."""
    values = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)?.*\)\s*", expr, re.DOTALL)
    if values:
        return {values.group(1)} if values.group(1) else set()
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if not call and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = list(_panels(dashboard.get("panels", [])))
    queries = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows hold their panels


def alert_rules() -> list[dict[str, Any]]:
    (doc,) = documents(ALERTS)
    return [rule for group in doc["groups"] for rule in group["rules"]]


# --- every file parses ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", deploy_files(".yaml", ".yml", ".json"), ids=lambda p: p.name)
def test_every_deploy_file_parses(path: Path) -> None:
    if path.suffix == ".json":
        assert json.loads(path.read_text(encoding="utf-8"))
    else:
        assert documents(path)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = documents(K8S / "kustomization.yaml")
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)
    assert "variants" not in " ".join(kustomization["resources"])  # not the default


# --- settings -----------------------------------------------------------------------------------


def test_known_variables_come_from_the_settings_dataclasses() -> None:
    known = known_variables()
    assert {"GATEWAY_CONFIG", "GATEWAY_KAFKA_BOOTSTRAP_SERVERS", "GATEWAY_SPOOL_MAX_BYTES"} <= known
    assert unknown_variables({"GATEWAY_KAFKA_BOOTSTRAP_SERVER", "EXAMPLE_TOKEN"}) == {
        "GATEWAY_KAFKA_BOOTSTRAP_SERVER"
    }


def test_every_gateway_variable_set_in_deploy_is_a_real_setting() -> None:
    compose_names = {n for s in compose()["services"].values() for n in compose_environment(s)}
    k8s_names = {e["name"] for e in gateway_container().get("env", [])}
    configmap_names = set(manifests()["ConfigMap"]["data"]) - {"gateway.toml"}
    docker_names = set(dockerfile_env())
    everything = compose_names | k8s_names | configmap_names | docker_names
    assert "GATEWAY_KAFKA_ENABLE_IDEMPOTENCE" in compose_names & k8s_names
    assert unknown_variables(everything) == set()


def test_the_production_config_loads_with_its_secrets_from_the_environment() -> None:
    raw = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    credentials = [c for t in raw["tenants"] for c in t["credentials"]]
    assert credentials
    assert [c for c in credentials if "secret" in c] == [], "a secret written in gateway.toml"
    settings = load_settings(CONFIG, environ=dummy_secrets())
    assert settings.kafka.enable_idempotence is True
    assert {c.vendor for t in settings.tenants for c in t.credentials} == {
        "caliper",
        "canvas",
        "pearson",
        "inspera",
    }


def test_the_configmap_holds_gateway_toml_verbatim() -> None:
    configmap = manifests()["ConfigMap"]
    assert configmap["data"]["gateway.toml"] == CONFIG.read_text(encoding="utf-8")


def test_compose_provides_every_secret_and_its_environment_loads() -> None:
    env = compose_environment(compose()["services"]["gateway"])
    assert set(secret_variables()) <= set(env)
    for name in secret_variables():  # from the shell or deploy/.env, never written here
        assert env[name].startswith("${"), f"{name} is written into compose.yaml"
    settings = load_settings(CONFIG, environ={**env, **dummy_secrets()})
    assert settings.kafka.enable_idempotence is True
    mounts = compose()["services"]["gateway"]["volumes"]
    assert f"./gateway.toml:{env[CONFIG_ENV]}:ro" in mounts


def test_compose_replication_matches_its_brokers() -> None:
    brokers = kafka_services()
    env = compose_environment(compose()["services"]["gateway"])
    settings = load_settings(CONFIG, environ={**env, **dummy_secrets()})
    assert settings.kafka.topic_replication_factor == len(brokers) == 3
    voters = set()
    for service in brokers.values():
        kafka_env = compose_environment(service)
        assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
        assert int(kafka_env["KAFKA_MIN_INSYNC_REPLICAS"]) < settings.kafka.topic_replication_factor
        voters.add(kafka_env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        host = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
        assert host in settings.kafka.bootstrap_servers.split(",")
    (quorum,) = voters
    node_ids = {compose_environment(s)["KAFKA_NODE_ID"] for s in brokers.values()}
    assert {voter.split("@")[0] for voter in quorum.split(",")} == node_ids


def test_kubernetes_provides_every_secret_and_its_environment_loads() -> None:
    objects = manifests()
    secret, container = objects["Secret"], gateway_container()
    assert set(secret_variables()) <= set(secret["stringData"])
    assert all(value == "" for value in secret["stringData"].values()), "a secret in secret.yaml"
    refs = {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    assert secret["metadata"]["name"] in refs
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = load_settings(CONFIG, environ={**env, **dummy_secrets()})
    assert settings.kafka.enable_idempotence is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert env[CONFIG_ENV].rsplit("/", 1)[0] in mounts
    assert settings.server.state_dir in mounts
    assert not mounts[settings.server.state_dir].get("readOnly", False)


# --- ports, probes, routes ----------------------------------------------------------------------


async def test_the_app_serves_the_probe_paths_on_the_admin_port_only(
    app_settings: Settings,
) -> None:
    server = app_settings.server
    assert server.admin_port not in (0, server.port)
    for path in OPERATIONAL:
        # /readyz is 503 here: no lifespan, so no Kafka. Served all the same.
        assert await status(app_settings, server.admin_port, path) in (200, 503), path
        assert await status(app_settings, server.port, path) == 404, path


def test_kubernetes_ports_and_probes_match_settings_and_routes(app_settings: Settings) -> None:
    server = app_settings.server
    container = gateway_container()
    assert container_port(container, "http") == server.port
    assert container_port(container, "admin") == server.admin_port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in OPERATIONAL
        assert container_port(container, get["port"]) == server.admin_port, probe
    annotations = pod_template()["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == server.admin_port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_ingress_reaches_the_public_port_only(app_settings: Settings) -> None:
    container = gateway_container()
    public, headless = services()
    targets = [container_port(container, p["targetPort"]) for p in public["spec"]["ports"]]
    assert targets == [app_settings.server.port]
    assert not headless["spec"].get("ports"), "the headless Service takes no traffic"


def test_prometheus_scrapes_the_admin_port(app_settings: Settings) -> None:
    container = gateway_container()
    (kubernetes,) = documents(DEPLOY / "prometheus" / "scrape-kubernetes.yaml")
    (job,) = kubernetes["scrape_configs"]
    assert job["job_name"] == "assessment-gateway"  # as alerts.yaml expects
    assert job["metrics_path"] == "/metrics"
    kept = {
        rule["regex"]
        for rule in job["relabel_configs"]
        if rule["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
        and rule["action"] == "keep"
    }
    assert [container_port(container, name) for name in kept] == [app_settings.server.admin_port]
    (composed,) = documents(DEPLOY / "prometheus" / "scrape-compose.yaml")
    (job,) = composed["scrape_configs"]
    assert job["job_name"] == "assessment-gateway"
    (targets,) = [c["targets"] for c in job["static_configs"]]
    assert targets == [f"gateway:{app_settings.server.admin_port}"]
    assert "gateway" in compose()["services"]


def test_compose_publishes_the_public_and_admin_ports_on_loopback(app_settings: Settings) -> None:
    published = {}
    for mapping in compose()["services"]["gateway"]["ports"]:
        host, host_port, container_port = str(mapping).split(":")
        assert host == "127.0.0.1"  # a proxy, or this host, in front
        published[int(container_port)] = int(host_port)
    server = app_settings.server
    assert published == {server.port: server.port, server.admin_port: server.admin_port}


def test_kubernetes_selectors_and_targets_name_the_gateway() -> None:
    objects = manifests()
    statefulset = objects["StatefulSet"]
    labels = pod_template()["metadata"]["labels"]
    for kind in ("StatefulSet", "PodDisruptionBudget"):
        assert objects[kind]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    public, headless = services()
    for service in (public, headless):
        assert service["spec"]["selector"].items() <= labels.items()
    assert statefulset["spec"]["serviceName"] == headless["metadata"]["name"]
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", statefulset["metadata"]["name"])
    volumes = pod_template()["spec"]["volumes"]
    config = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
    assert config == objects["ConfigMap"]["metadata"]["name"]


# --- the spool's volume -------------------------------------------------------------------------


def test_each_pod_keeps_its_spool_on_a_volume_claim_of_its_own() -> None:
    settings = k8s_settings()
    statefulset = manifests()["StatefulSet"]
    spec = statefulset["spec"]
    # Kept when scaled down (a scaled-away pod's spool may hold events) and when deleted.
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Retain",
        "whenDeleted": "Retain",
    }
    claims = {claim["metadata"]["name"]: claim for claim in spec["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in gateway_container()["volumeMounts"]}
    state = mounts[settings.server.state_dir]
    assert state in claims, "the state directory is not on a claim"
    assert state not in {v["name"] for v in pod_template()["spec"]["volumes"]}
    claim = claims[state]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    size = claim["resources"]["requests"]["storage"]
    assert re.fullmatch(r"\d+Gi", size)
    assert int(size[:-2]) << 30 > settings.spool.max_bytes  # the spool, and the quiz log


def test_the_deployment_variant_is_the_statefulset_but_for_the_state_volume() -> None:
    (deployment,) = documents(DEPLOYMENT_VARIANT)
    assert deployment["kind"] == "Deployment"
    statefulset = manifests()["StatefulSet"]
    assert deployment["spec"]["selector"] == statefulset["spec"]["selector"]
    template = pod_template(deployment)
    volumes = template["spec"]["volumes"]
    (state,) = [v for v in volumes if v["name"] == "state"]
    assert "emptyDir" in state  # the trade-off deploy/README.md describes
    mounts = {m["mountPath"]: m["name"] for m in gateway_container(deployment)["volumeMounts"]}
    assert mounts[k8s_settings(gateway_container(deployment)).server.state_dir] == "state"
    without_state = {
        **template,
        "spec": {**template["spec"], "volumes": [v for v in volumes if v is not state]},
    }
    assert without_state == pod_template()
    assert "emptyDir" in (DEPLOY / "README.md").read_text(encoding="utf-8")


# --- security and shutdown ------------------------------------------------------------------------


def test_kubernetes_runs_unprivileged_on_a_read_only_root() -> None:
    statefulset = manifests()["StatefulSet"]
    pod = pod_template()["spec"]
    container = gateway_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"] for v in pod["volumes"]}
    volumes |= {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]


def test_termination_grace_covers_the_drain_and_the_shutdown(app_settings: Settings) -> None:
    # preStop: python -c SCRIPT <settle seconds> <drain wait seconds>; then SIGTERM, after which
    # requests in flight wait up to the ack deadline and the producer flushes for up to the
    # publish timeout.
    *_, script, settle, drain = gateway_container()["lifecycle"]["preStop"]["exec"]["command"]
    # The drain is read from /readyz, which the admin port serves.
    assert f"http://127.0.0.1:{app_settings.server.admin_port}/readyz" in script
    needed = (
        float(settle)
        + float(drain)
        + app_settings.spool.ack_deadline_seconds
        + app_settings.kafka.publish_timeout_seconds
    )
    grace = pod_template()["spec"]["terminationGracePeriodSeconds"]
    assert grace >= needed


def test_dockerfile_runs_unprivileged_with_a_healthcheck(app_settings: Settings) -> None:
    stage = dockerfile_final_stage()
    users = [i.split()[1] for i in stage if i.startswith("USER ")]
    assert users, "the image would run as root"
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert users[-1].split(":")[0].isdigit(), "runAsNonRoot can only verify a numeric user"
    (healthcheck,) = [i for i in stage if i.startswith("HEALTHCHECK ")]
    server = app_settings.server
    # The admin port, by default (and the public one where the admin port is turned off).
    assert f"'GATEWAY_SERVER_ADMIN_PORT', '{server.admin_port}'" in healthcheck
    assert f"'GATEWAY_SERVER_PORT', '{server.port}'" in healthcheck
    assert "/healthz" in healthcheck
    assert f"EXPOSE {server.port} {server.admin_port}" in stage
    assert 'CMD ["gateway", "serve", "--host", "0.0.0.0"]' in stage
    env = dockerfile_env()
    volumes = " ".join(i for i in stage if i.startswith("VOLUME "))
    assert f'"{env["GATEWAY_SERVER_STATE_DIR"]}"' in volumes


def test_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    copied = set()
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copied |= {w.rstrip("/") for w in words[1:-1] if not w.startswith("--")}
    assert "schemas" in copied  # gateway/schemas.py needs them next to the package
    assert copied <= allowed


# --- metrics --------------------------------------------------------------------------------------


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, vendor) (rate(a_bucket{status=~"5.."}[5m]))) '
        "/ ignoring(x) b_total > 0 and on(instance) c offset 1h"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert metric_names("label_values(gateway_requests_total, vendor)") == {
        "gateway_requests_total"
    }


def test_the_gateway_exports_what_it_documents(exported_metrics: set[str]) -> None:
    assert {
        "gateway_requests_total",
        "gateway_events_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_spool_depth",
        "gateway_spool_oldest_age_seconds",
        "gateway_broker_errors_total",
    } <= exported_metrics
    assert "gateway_requests" not in exported_metrics  # counters are scraped with _total


def test_the_dashboard_queries_only_exported_metrics(exported_metrics: set[str]) -> None:
    queries = dashboard_queries()
    queried = set().union(*(metric_names(q) for q in queries))
    assert len(queries) >= 10
    assert queried - exported_metrics == set()


def test_the_alert_rules_query_only_exported_metrics(exported_metrics: set[str]) -> None:
    rules = alert_rules()
    queried = set().union(*(metric_names(rule["expr"]) for rule in rules))
    assert queried - exported_metrics - set(EXTERNAL_METRICS) == set()
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_the_alert_rule_tests_feed_exported_metrics(exported_metrics: set[str]) -> None:
    # deploy/prometheus/alerts.test.yaml (run by promtool) must not test a metric that is gone.
    (doc,) = documents(ALERTS.with_name("alerts.test.yaml"))
    series = [s["series"] for test in doc["tests"] for s in test["input_series"]]
    assert series
    assert set().union(*(metric_names(s) for s in series)) - exported_metrics == set()


def test_the_alert_rules_cover_the_failures_ops_must_hear_about() -> None:
    queried = {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert {
        "gateway_spool_depth",
        "gateway_spool_oldest_age_seconds",
        "gateway_broker_errors_total",
        "gateway_requests_total",
        "gateway_events_total",
        "kube_pod_status_ready",
    } <= queried
