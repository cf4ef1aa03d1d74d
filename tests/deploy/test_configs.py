"""The configs of deploy/ in the tools that read them: Prometheus's and Alertmanager's own checks
(promtool, amtool: Debian's prometheus and prometheus-alertmanager packages, older than the
images the stack pins, same file formats), and the ClickHouse settings named in deploy/clickhouse
against the settings ClickHouse knows (chDB's engine)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.deploy.manifests import DASHBOARDS, DEPLOY, K8S, ROOT

pytestmark = pytest.mark.integration

PROMETHEUS_CONFIGS = (DEPLOY / "prometheus" / "prometheus.yml", K8S / "prometheus.yml")


def tool(name: str, package: str) -> str:
    exe = shutil.which(name)
    assert exe is not None, f"{name} is missing: scripts/setup.sh installs Debian's {package} package"
    return exe


@pytest.mark.parametrize("config", PROMETHEUS_CONFIGS, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_promtool_accepts_the_prometheus_config_with_ordertrails_rules(config: Path, tmp_path: Path) -> None:
    rules = ROOT / DASHBOARDS[3]
    text = config.read_text()
    assert "- /etc/prometheus/rules/*.yml" in text
    if rules.exists():  # load the rules the stack mounts, so promtool checks them in place
        text = text.replace("- /etc/prometheus/rules/*.yml", f"- {rules}")
    copy = tmp_path / "prometheus.yml"
    copy.write_text(text)
    out = subprocess.run([tool("promtool", "prometheus"), "check", "config", str(copy)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    if not rules.exists():
        pytest.skip(f"{DASHBOARDS[3]} is not in this branch yet: config checked without its rules")


def test_amtool_accepts_the_alertmanager_config() -> None:
    config = DEPLOY / "alertmanager" / "alertmanager.yml"
    out = subprocess.run(
        [tool("amtool", "prometheus-alertmanager"), "check-config", str(config)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_clickhouse_xml_file_is_well_formed() -> None:
    files = sorted((DEPLOY / "clickhouse").glob("*.xml"))
    assert len(files) == 5
    for path in files:
        assert ET.parse(path).getroot().tag == "clickhouse", path


def test_every_clickhouse_setting_named_in_deploy_exists() -> None:
    users = ET.parse(DEPLOY / "clickhouse" / "users.xml").getroot()
    settings = {s.tag for profile in users.iter("profiles") for p in profile for s in p}
    merge_tree = {s.tag for s in ET.parse(DEPLOY / "clickhouse" / "config.xml").getroot().iter("merge_tree") for s in s}
    assert {"distributed_product_mode", "distributed_foreground_insert", "insert_quorum"} <= settings
    # chDB in its own process: it runs one engine per process, and other tests may hold one.
    script = (
        "import chdb, json, sys; c = chdb.connect(':memory:'); names = json.loads(sys.argv[1]); "
        "q = lambda t: {r['name'] for r in map(json.loads, c.query(f'SELECT name FROM system.{t}', "
        "'JSONEachRow').bytes().splitlines())}; "
        "print(json.dumps({'settings': sorted(set(names[0]) - q('settings')), "
        "'merge_tree': sorted(set(names[1]) - q('merge_tree_settings'))}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps([sorted(settings), sorted(merge_tree)])],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == {"settings": [], "merge_tree": []}


def test_keeper_and_cluster_hosts_match_the_statefulsets() -> None:
    import yaml

    sets = {
        d["metadata"]["name"]: d
        for name in ("clickhouse.yaml", "clickhouse-keeper.yaml", "kafka.yaml")
        for d in yaml.safe_load_all((K8S / name).read_text())
        if d and d["kind"] == "StatefulSet"
    }
    cluster = (DEPLOY / "clickhouse" / "k8s-cluster.xml").read_text()
    keeper = (DEPLOY / "clickhouse" / "keeper.xml").read_text()
    for name, text in (("clickhouse", cluster), ("clickhouse-keeper", keeper)):
        service = sets[name]["spec"]["serviceName"]
        hosts = set(re.findall(rf"<(?:host|hostname)>({name}-\d+)\.([\w-]+)</", text))
        assert hosts == {(f"{name}-{i}", service) for i in range(sets[name]["spec"]["replicas"])}, name
    keeper_clients = set(re.findall(r"<host>(clickhouse-keeper-\d+)\.", cluster))
    assert len(keeper_clients) == sets["clickhouse-keeper"]["spec"]["replicas"]
    voters = sets["kafka"]["spec"]["template"]["spec"]["containers"][0]["env"]
    quorum = next(e["value"] for e in voters if e["name"] == "KAFKA_CONTROLLER_QUORUM_VOTERS")
    assert len(quorum.split(",")) == sets["kafka"]["spec"]["replicas"]


def _compose_env() -> dict[str, str]:
    """The clickhouse service's environment as compose gives it (defaults of ${VAR:-default})."""
    import yaml

    env = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["clickhouse"]["environment"]
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def _k8s_env(ordinal: int) -> dict[str, str]:
    """What the clickhouse pod's start script exports, run by bash for pod clickhouse-ORDINAL."""
    import yaml

    sts = next(d for d in yaml.safe_load_all((K8S / "clickhouse.yaml").read_text()) if d["kind"] == "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    script = container["args"][0].replace("exec /entrypoint.sh", "env")
    out = subprocess.run(
        ["bash", "-c", script], env={"HOSTNAME": f"clickhouse-{ordinal}"}, capture_output=True, text=True, check=True
    )
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return {**env, **{e["name"]: "secret" for e in container["env"] if "valueFrom" in e}}


@pytest.mark.parametrize(
    ("cluster_file", "env", "macros", "replicas"),
    [
        ("compose-cluster.xml", _compose_env(), {"shard": "01", "replica": "clickhouse"}, [(1, 1, "clickhouse")]),
        (
            "k8s-cluster.xml",
            _k8s_env(2),
            {"shard": "02", "replica": "clickhouse-2"},
            [(s, r, f"clickhouse-{2 * (s - 1) + r - 1}.clickhouse-nodes") for s in (1, 2) for r in (1, 2)],
        ),
    ],
    ids=["compose", "k8s"],
)
def test_clickhouse_loads_the_config_with_its_macros_and_cluster(
    cluster_file: str, env: dict[str, str], macros: dict[str, str], replicas: list[tuple[int, int, str]], tmp_path: Path
) -> None:
    """config.xml and the cluster file as config.d of ClickHouse's engine (chDB, which starts no
    Keeper and opens no port), with the environment each deployment gives the server."""
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.xml").write_text("<clickhouse></clickhouse>\n")
    shutil.copy(DEPLOY / "clickhouse" / "config.xml", tmp_path / "config.d" / "ordertrail.xml")
    shutil.copy(DEPLOY / "clickhouse" / cluster_file, tmp_path / "config.d" / "cluster.xml")
    script = (
        "import chdb, json, sys; c = chdb.connect(sys.argv[1]); "
        "q = lambda s: [json.loads(r) for r in c.query(s, 'JSONEachRow').bytes().splitlines()]; "
        "print(json.dumps([q('SELECT macro, substitution FROM system.macros'), "
        "q('SELECT shard_num, replica_num, host_name, port FROM system.clusters WHERE cluster = \\'ordertrail\\' "
        "ORDER BY shard_num, replica_num'), q('SELECT value FROM system.merge_tree_settings "
        "WHERE name = \\'parts_to_delay_insert\\'')])); c.close()"
    )
    dsn = f"{tmp_path / 'db'}?config-file={tmp_path / 'config.xml'}"
    out = subprocess.run(
        [sys.executable, "-c", script, dsn], env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found_macros, clusters, delay = json.loads(out.stdout.splitlines()[-1])
    assert {m["macro"]: m["substitution"] for m in found_macros} == {"cluster": "ordertrail", **macros}
    assert [(c["shard_num"], c["replica_num"], c["host_name"]) for c in clusters] == replicas
    assert {c["port"] for c in clusters} == {9000}
    assert delay == [{"value": "300"}]  # config.d was read


def test_clickhouse_loads_the_users_and_their_profiles(tmp_path: Path) -> None:
    """users.xml as users.d of ClickHouse's engine (chDB): the pipeline's user with its profile,
    and `default` read-only for Grafana."""
    (tmp_path / "users.d").mkdir()
    (tmp_path / "config.xml").write_text(
        f"<clickhouse><users_config>{tmp_path / 'users.xml'}</users_config></clickhouse>"
    )
    (tmp_path / "users.xml").write_text(  # the server's own users.xml, as the image ships it
        "<clickhouse><profiles><default/></profiles><quotas><default/></quotas><users><default><password/>"
        "<profile>default</profile><quota>default</quota><access_management>1</access_management></default>"
        "</users></clickhouse>"
    )
    shutil.copy(DEPLOY / "clickhouse" / "users.xml", tmp_path / "users.d" / "ordertrail.xml")
    script = (
        "import chdb, json, sys; c = chdb.connect(sys.argv[1]); "
        "q = lambda s: [json.loads(r) for r in c.query(s, 'JSONEachRow').bytes().splitlines()]; "
        "print(json.dumps([q('SELECT name, auth_type FROM system.users ORDER BY name'), "
        "q('SELECT profile_name, user_name, setting_name, value, inherit_profile "
        "FROM system.settings_profile_elements'), q(\"SELECT getSetting('readonly') AS readonly\")])); c.close()"
    )
    dsn = f"{tmp_path / 'db'}?config-file={tmp_path / 'config.xml'}"
    env = {"PATH": "/usr/bin:/bin", "ORDERTRAIL_CLICKHOUSE_PASSWORD": "pw"}
    out = subprocess.run([sys.executable, "-c", script, dsn], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    users, elements, readonly = json.loads(out.stdout.splitlines()[-1])
    assert users == [
        {"name": "default", "auth_type": ["plaintext_password"]},
        {"name": "ordertrail", "auth_type": ["plaintext_password"]},
    ]
    profile_of = {e["user_name"]: e["inherit_profile"] for e in elements if e["user_name"]}
    assert profile_of == {"default": "dashboards", "ordertrail": "ordertrail"}
    settings = {(e["profile_name"], e["setting_name"]): e["value"] for e in elements if e["profile_name"]}
    assert settings[("ordertrail", "distributed_product_mode")] == "local"
    assert settings[("ordertrail", "distributed_foreground_insert")] == "1"
    assert settings[("dashboards", "readonly")] == "2"
    assert readonly == [{"readonly": 2}]  # the engine's own session runs as `default`: read-only
