"""deploy/compose.yaml, offline: valid against the Compose specification's schema, images pinned,
every mounted file present, ports, hosts and credentials consistent between the services, their
commands and configs, and every ordertrail command accepted by ordertrail's own parser."""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.manifests import (
    DASHBOARDS,
    DEPLOY,
    ROLES,
    ROOT,
    compose,
    flag,
    image_tag,
    parse_role,
    port_of,
    services,
    version,
)

ORDERTRAIL = ("ingest", "tracer-1", "tracer-2", "detectors", "lookup-server")


def binds(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(file in the repository, path in the container) of every bind mount."""
    found = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found.append(((DEPLOY / source).resolve(), target))
    return found


def test_every_yaml_file_of_deploy_is_well_formed() -> None:
    files = sorted(DEPLOY.rglob("*.y*ml"))
    assert len(files) >= 10
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_the_stack_has_every_part_and_two_tracers() -> None:
    expected = {"kafka", "kafka-topics", "clickhouse", "prometheus", "alertmanager", "grafana", *ORDERTRAIL}
    assert set(services()) == expected


def test_every_image_is_pinned_to_a_version() -> None:
    for name, service in services().items():
        tag = image_tag(service["image"])
        assert re.fullmatch(r"v?\d+(\.\d+)+", tag), f"{name}: image {service['image']!r} is not pinned to a version"
    for name in ORDERTRAIL:
        assert services()[name]["image"] == f"ordertrail:{version()}", "ordertrail's image carries its version"


def test_every_bind_mounted_file_of_deploy_exists() -> None:
    for name, service in services().items():
        for path, target in binds(service):
            if not path.relative_to(ROOT).as_posix().startswith("dashboards/"):
                assert path.exists(), f"{name} mounts {path.relative_to(ROOT)} at {target}: missing"


def test_every_dashboards_file_grafana_and_prometheus_mount_exists() -> None:
    """These come from dashboards/ (the observability work): this test fails until they exist."""
    mounted = {p.relative_to(ROOT).as_posix() for s in services().values() for p, _ in binds(s)}
    assert set(DASHBOARDS) <= mounted
    missing = sorted(p for p in mounted if p.startswith("dashboards/") and not (ROOT / p).exists())
    assert missing == [], f"mounted but not in the repository: {missing}"


def test_the_image_build_copies_only_what_exists() -> None:
    build = services()["ingest"]["build"]
    dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).resolve()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and not line.startswith("COPY --from="):  # --from: an earlier stage
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: missing"


def test_ordertrail_roles_share_bus_store_and_port() -> None:
    for name in ORDERTRAIL:
        command = services()[name]["command"]
        assert command[0] in ROLES
        assert flag(command, "--bus") == "kafka://kafka:9092", name
        assert flag(command, "--store") == "http://clickhouse:8123/ordertrail", name
        assert flag(command, "--listen") == "0.0.0.0:4320", name
        assert flag(command, "--journeys") in {t for _, t in binds(services()[name])}, name
    assert services()["tracer-1"]["command"] == services()["tracer-2"]["command"]
    assert services()["tracer-1"]["command"][0] == "tracer"


@pytest.mark.parametrize("name", ORDERTRAIL)
def test_ordertrail_commands_parse_with_the_real_cli(name: str) -> None:
    command = services()[name]["command"]
    assert parse_role(command) is not None, f"`ordertrail {command[0]}` is not a command of ordertrail.cli"


def test_published_and_healthchecked_ports_are_the_listen_port() -> None:
    for name in ORDERTRAIL:
        service = services()[name]
        port = port_of("http://" + flag(service["command"], "--listen"))[1]
        for mapping in service.get("ports", []):
            assert int(mapping.split(":")[-1]) == port, f"{name}: publishes {mapping}, listens on {port}"
        assert f":{port}/healthz" in " ".join(service["healthcheck"]["test"]), name


def test_kafka_is_reached_where_it_advertises_itself() -> None:
    env = services()["kafka"]["environment"]
    host, port = port_of(flag(services()["tracer-1"]["command"], "--bus"))
    assert f"PLAINTEXT://{host}:{port}" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://:{port}" in env["KAFKA_LISTENERS"]
    assert services()["kafka-topics"]["environment"]["BOOTSTRAP"] == f"{host}:{port}"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert str(env["KAFKA_NODE_ID"]) == "1"


def test_alertmanager_and_clickhouse_are_where_the_roles_look() -> None:
    am_host, am_port = port_of(flag(services()["detectors"]["command"], "--alertmanager"))
    assert am_host in services()
    assert f"--web.listen-address=:{am_port}" in services()[am_host]["command"]
    ch_host, ch_port = port_of(flag(services()["tracer-1"]["command"], "--store"))
    assert ch_host in services() and ch_port == 8123  # the image's HTTP port; config.xml keeps it
    assert "http_port" not in (DEPLOY / "clickhouse" / "config.xml").read_text()


def test_clickhouse_credentials_and_macros_come_from_the_service_environment() -> None:
    service = services()["clickhouse"]
    env = service["environment"]
    needed = set()
    for path, _ in binds(service):
        if path.suffix == ".xml":
            needed |= set(re.findall(r'from_env="(\w+)"', path.read_text()))
    assert needed and needed <= set(env), f"unset in the clickhouse service: {needed - set(env)}"
    for name in ORDERTRAIL:
        role_env = services()[name]["environment"]
        assert role_env["ORDERTRAIL_CLICKHOUSE_USER"] == "ordertrail"
        assert role_env["ORDERTRAIL_CLICKHOUSE_PASSWORD"] == env["ORDERTRAIL_CLICKHOUSE_PASSWORD"]
    assert "<ordertrail>" in (DEPLOY / "clickhouse" / "users.xml").read_text()
    # the healthcheck waits for the cluster schema, so no role creates single-node tables first
    assert "ordertrail.trail" in " ".join(service["healthcheck"]["test"])
    assert all(services()[n]["depends_on"]["clickhouse"]["condition"] == "service_healthy" for n in ORDERTRAIL)


def test_prometheus_scrapes_every_ordertrail_role_where_it_listens() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for group in job.get("static_configs", []) for t in group["targets"]
    }
    for name in ORDERTRAIL:
        port = port_of("http://" + flag(services()[name]["command"], "--listen"))[1]
        assert f"{name}:{port}" in targets, name
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    # dashboards/prometheus/rules.yml finds ordertrail's targets by up{job=~"ordertrail.*"}
    assert {j for j in jobs if j.startswith("ordertrail")} == {f"ordertrail-{r}" for r in ROLES}
    assert "clickhouse:9363" in targets and "<port>9363</port>" in (DEPLOY / "clickhouse" / "config.xml").read_text()
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    mounts = {t for _, t in binds(services()["prometheus"])}
    rules_dir = config["rule_files"][0].rsplit("/", 1)[0]
    assert any(t.startswith(rules_dir + "/") and t.endswith(".yml") for t in mounts)


def test_grafana_datasources_point_at_the_compose_services() -> None:
    datasources = ROOT / DASHBOARDS[0]
    if not datasources.exists():
        pytest.skip(f"{DASHBOARDS[0]} is not in this branch yet (observability work)")
    by_uid = {d["uid"]: d for d in yaml.safe_load(datasources.read_text())["datasources"]}
    host, port = port_of(by_uid["prometheus"]["url"])
    assert f"--web.listen-address=:{port}" in services()[host]["command"]
    assert by_uid["clickhouse"]["jsonData"]["host"] in services()
    assert by_uid["clickhouse"]["jsonData"]["port"] == 8123


def test_topic_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(DEPLOY / "kafka" / "create-topics.sh")], check=True)


@pytest.mark.parametrize("name", ORDERTRAIL)
def test_role_flags_are_flags_of_ordertrail_run(name: str) -> None:
    """Until every role is built, its flags are checked against `ordertrail run`, whose pipeline
    the roles split up: each flag must exist there and take the value given."""
    command = services()[name]["command"]
    parse_role(["run", *command[1:]])
