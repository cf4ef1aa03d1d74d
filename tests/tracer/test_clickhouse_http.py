"""The Store's ``http://`` path and the cluster schema, against ClickHouse's HTTP interface.

No ClickHouse server can run here (see ``tests/tracer/chhttp.py``), so the server is the
stand-in: ClickHouse's HTTP interface in front of the chDB engine, in its own process. What this
proves: clickhouse-connect's HTTP client carries every Store call (auth, settings, bindings,
Native results, lz4 insert bodies) and the Store's SQL runs on ClickHouse's engine; the cluster
schema parses and runs there with Distributed tables over a one-shard cluster of this node,
with the settings profile the deploy gives the ordertrail user (deploy/clickhouse/users.xml)
(``remote_servers`` in a config file; ``Replicated*MergeTree`` becomes the plain engine and ``ON
CLUSTER`` is dropped, since they need Keeper). What it cannot prove: replication, several shards,
the native protocol, a real server's access control.

The contract tests of ``test_clickhouse.py`` run here again over HTTP on the cluster schema (the
``store`` fixture below); the single-node schema over HTTP is opened, written and compared below.
"""

from __future__ import annotations

import inspect
import itertools
import re
import select
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tracer import test_clickhouse as contract
from tracer.clickhouse import Store, migrations
from tracer.clusterschema import cluster_schema
from tracer.errors import StoreError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "ordertrail", "s3cret-pw"
CLUSTER = "ordertrail"
# One shard, one replica: this node. tcp_port makes the engine see the replica as itself
# (chDB listens on nothing, so no port is opened).
CONFIG = """<clickhouse>
  <tcp_port>{port}</tcp_port>
  <remote_servers><ordertrail><shard><replica><host>localhost</host><port>{port}</port></replica></shard>
  </ordertrail></remote_servers>
  <macros><cluster>ordertrail</cluster><shard>01</shard><replica>r1</replica></macros>
</clickhouse>
"""
_databases = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stand-in server's base URL (no credentials); stopped after the module."""
    root = tmp_path_factory.mktemp("chhttp")
    config = root / "config.xml"
    config.write_text(CONFIG.format(port=contract._free_port()))
    cmd = [sys.executable, "-m", "tests.tracer.chhttp", str(root / "db"), "--user", USER, "--password", PASSWORD]
    cmd += ["--config-file", str(config), *(f"--setting={k}={v}" for k, v in deploy_profile().items())]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("listening on "), f"the stand-in did not start: {line!r}"
        yield line.split()[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def deploy_profile() -> dict[str, str]:
    """The settings profile of the ordertrail user in deploy/clickhouse/users.xml: the stand-in
    applies it as the server would, so the Store is tested with the settings it is deployed with."""
    users = ET.parse(ROOT / "deploy" / "clickhouse" / "users.xml").getroot()
    profile = users.find("profiles/ordertrail")
    assert profile is not None
    return {s.tag: (s.text or "").strip() for s in profile}


def url(server: str, database: str, user: str = USER, password: str = PASSWORD) -> str:
    return server.replace("http://", f"http://{user}:{password}@") + f"/{database}"


def on_this_node(schema: str) -> str:
    """The cluster schema as chDB can run it: no Keeper, so plain engines and no ON CLUSTER."""
    schema = schema.replace(f" ON CLUSTER '{CLUSTER}'", "")
    return re.sub(r"Replicated(\w*MergeTree)\('[^']*', '\{replica\}'(?:, )?", r"\1(", schema)


def create_cluster_database(server: str, database: str, *, record_migrations: bool = True) -> None:
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=url(server, ""))
    try:
        schema = on_this_node(cluster_schema(database, CLUSTER))
        if not record_migrations:
            schema = schema[: schema.index(f"INSERT INTO {database}.schema_migrations")]
        for statement in re.split(r";[ \t]*(?:\n|$)", schema):
            sql = "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--")).strip()
            if sql:
                client.command(sql)
    finally:
        client.close()


@pytest.fixture
def store(server: str) -> Iterator[Store]:
    """A Store over HTTP on a fresh database of the cluster schema. (The single-node schema's SQL
    runs the same contract in chDB in test_clickhouse.py; the transport is this one.)"""
    database = f"h{next(_databases)}"
    create_cluster_database(server, database)
    opened = Store.open(url(server, database))
    yield opened
    opened.close()


# The store contract of test_clickhouse.py, over HTTP on the cluster schema.
for _name, _test in inspect.getmembers(contract, inspect.isfunction):
    if _name.startswith("test_") and list(inspect.signature(_test).parameters) == ["store"]:
        globals()[_name] = _test


def _columns(store: Store, database: str) -> dict[str, list[tuple[Any, ...]]]:
    rows = store._rows(
        "SELECT table, name, type, default_kind, default_expression FROM system.columns "
        f"WHERE database = '{database}' ORDER BY table, position"
    )
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for table, *column in rows:
        tables.setdefault(table, []).append(tuple(column))
    return tables


def test_every_single_node_table_has_a_distributed_and_a_local_table_with_its_columns(server: str) -> None:
    create_cluster_database(server, "cluster_cols")
    with Store.open(url(server, "single_cols")) as single:
        assert single.migrations_applied == [v for v, _, _ in migrations()]
        mine, theirs = _columns(single, "single_cols"), _columns(single, "cluster_cols")
        engines = dict(single._rows("SELECT name, engine FROM system.tables WHERE database = 'cluster_cols'"))
    views = {t for t, e in engines.items() if e == "View"}  # over the Distributed tables: the whole cluster
    for table, columns in mine.items():
        if table == "schema_migrations" or table in views:
            assert theirs[table] == columns, table
            continue
        assert engines[table] == "Distributed", table
        assert theirs[table] == columns, table
        assert theirs[f"{table}_local"] == columns, table
    assert views == {"otel_traces", "otel_traces_trace_id_ts"}
    assert "MaterializedView" not in engines.values() and "otel_traces_local" not in engines


def test_store_on_a_cluster_database_applies_nothing(server: str) -> None:
    create_cluster_database(server, "cluster_open")
    with Store.open(url(server, "cluster_open")) as store:
        assert store.migrations_applied == []
        tables = {r[0] for r in store._rows("SELECT name FROM system.tables WHERE database = 'cluster_open'")}
    assert "hops" in tables and "hops_local" in tables and "hops_local_local" not in tables


def test_store_refuses_to_migrate_a_cluster_database_itself(server: str) -> None:
    create_cluster_database(server, "cluster_behind", record_migrations=False)
    with pytest.raises(StoreError, match="holds a cluster schema and misses migrations 0001_init"):
        Store.open(url(server, "cluster_behind"))


def test_hops_reach_otel_traces_through_the_distributed_table(server: str) -> None:
    create_cluster_database(server, "cluster_spans")
    with Store.open(url(server, "cluster_spans")) as store:
        store.write([contract.ev("o-span", "checkout.placed", contract.T0)], [], [])
        rows = store._rows("SELECT SpanAttributes['app.order.id'] FROM cluster_spans.otel_traces")
    assert rows == [("o-span",)]


def test_single_node_store_over_http_in_the_database_the_url_names(server: str) -> None:
    with Store.open(url(server, "from_path"), database="ignored") as store:
        databases = {r[0] for r in store._rows("SELECT name FROM system.databases")}
        store.write([contract.ev("o-1", "checkout.placed", contract.T0)], [], [contract.snap("o-1")])
        record = store.order("o-1")
    assert "from_path" in databases and "ignored" not in databases
    assert record is not None and record.snapshot == contract.snap("o-1")
    assert [e.hop for e in record.events] == ["checkout.placed"]


def test_inserts_to_a_server_are_lz4_compressed(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prepared (Native) insert bodies cross the network compressed, as the client's own would."""
    import lz4.frame  # type: ignore[import-untyped]

    sent: list[tuple[str | None, bytes]] = []
    raw_insert = store._client.raw_insert

    def spy(*args: Any, **kwargs: Any) -> Any:
        sent.append((kwargs.get("compression"), kwargs["insert_block"]))
        return raw_insert(*args, **kwargs)

    monkeypatch.setattr(store._client, "raw_insert", spy)
    store.write([contract.ev("o-9", "checkout.placed", contract.T0)], [], [contract.snap("o-9")])
    assert sent and all(encoding == "lz4" and lz4.frame.decompress(body) for encoding, body in sent)
    record = store.order("o-9")
    assert record is not None and [e.hop for e in record.events] == ["checkout.placed"]


def test_credentials_fall_back_to_the_clickhouse_image_variables(server: str) -> None:
    environ = {"CLICKHOUSE_USER": USER, "CLICKHOUSE_PASSWORD": PASSWORD}
    with Store.open(f"{server}/env_creds", environ=environ) as store:
        assert store.migrations_applied == [v for v, _, _ in migrations()]


def test_ordertrail_variables_win_over_the_image_variables(server: str) -> None:
    environ = {
        "ORDERTRAIL_CLICKHOUSE_USER": USER,
        "ORDERTRAIL_CLICKHOUSE_PASSWORD": PASSWORD,
        "CLICKHOUSE_USER": "someone",
        "CLICKHOUSE_PASSWORD": "else",
    }
    with Store.open(f"{server}/env_ours", environ=environ) as store:
        assert store.migrations_applied == [v for v, _, _ in migrations()]


def test_a_refused_password_is_named_as_such_and_never_shown(server: str) -> None:
    with pytest.raises(StoreError, match=f"refused user '{USER}'") as caught:
        Store.open(url(server, "refused", password="wrong-pw-123"))
    assert "wrong-pw-123" not in str(caught.value)
    with pytest.raises(StoreError, match="refused user 'default'"):
        Store.open(f"{server}/refused", environ={"CLICKHOUSE_PASSWORD": "wrong-pw-456"})


def test_credentials_are_never_one_from_each_pair(server: str) -> None:
    environ = {"ORDERTRAIL_CLICKHOUSE_USER": USER, "CLICKHOUSE_PASSWORD": PASSWORD}
    with pytest.raises(StoreError, match=f"refused user '{USER}'"):  # our user, with our (empty) password
        Store.open(f"{server}/mixed", environ=environ)
