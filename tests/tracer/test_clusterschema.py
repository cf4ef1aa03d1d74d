"""The cluster schema is derived from the migrations and refuses what it cannot derive. That it
runs, and matches the single-node tables column for column, is in test_clickhouse_http.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tracer.clusterschema import ClusterSchemaError, cluster_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse" / "schema.sql"


def table(name: str, column: str = "order_id", engine: str = "MergeTree") -> str:
    columns = f"(\n    {column} String\n)"
    return f"CREATE TABLE IF NOT EXISTS {{database}}.{name}\n{columns}\nENGINE = {engine}\nORDER BY {column};\n"


def test_deploy_schema_file_is_generated_from_the_current_migrations() -> None:
    assert SCHEMA_FILE.read_text() == cluster_schema(), (
        "deploy/clickhouse/schema.sql is stale: python -m tracer.clusterschema > deploy/clickhouse/schema.sql"
    )


def test_every_table_is_local_replicated_plus_distributed_by_order_id_hash() -> None:
    sql = cluster_schema("db", "c", [(1, "init", table("t"))])
    assert "CREATE TABLE IF NOT EXISTS db.t_local ON CLUSTER 'c'\n(\n    order_id String\n)\n" in sql
    assert "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/t_local', '{replica}')\n" in sql
    assert "CREATE TABLE IF NOT EXISTS db.t ON CLUSTER 'c' AS db.t_local\n" in sql
    assert "ENGINE = Distributed('c', db, t_local, cityHash64(order_id));" in sql
    assert "INSERT INTO db.schema_migrations (version, name, applied_at) VALUES (1, 'init', now64(3));" in sql


def test_engine_arguments_follow_the_replication_path() -> None:
    sql = cluster_schema("db", "c", [(1, "x", table("t", engine="ReplacingMergeTree(v)"))])
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/t_local', '{replica}', v)" in sql


def test_views_read_and_write_the_local_tables() -> None:
    view = "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.a_mv\nTO {database}.b\nAS SELECT * FROM {database}.a;\n"
    sql = cluster_schema("db", "c", [(1, "x", table("a") + table("b") + view)])
    assert (
        "CREATE MATERIALIZED VIEW IF NOT EXISTS db.a_mv ON CLUSTER 'c'\nTO db.b_local\nAS SELECT * FROM db.a_local;"
        in sql
    )


def test_plain_views_read_the_distributed_tables() -> None:
    view = "CREATE VIEW IF NOT EXISTS {database}.v AS SELECT order_id AS o FROM {database}.t;\n"
    sql = cluster_schema("db", "c", [(1, "x", table("t") + view)])
    assert "CREATE VIEW IF NOT EXISTS db.v ON CLUSTER 'c' AS SELECT order_id AS o FROM db.t;" in sql


def test_a_dropped_table_goes_with_its_local_table_and_is_never_created() -> None:
    mv = "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.a_mv\nTO {database}.b\nAS SELECT * FROM {database}.a;\n"
    drop = "DROP VIEW IF EXISTS {database}.a_mv;\n\nDROP TABLE IF EXISTS {database}.b;\n"
    sql = cluster_schema("db", "c", [(1, "x", table("a") + table("b") + mv), (2, "y", drop)])
    assert "CREATE TABLE IF NOT EXISTS db.a_local" in sql and "CREATE TABLE IF NOT EXISTS db.b" not in sql
    assert "CREATE MATERIALIZED VIEW" not in sql and "-- (b: not created, migration 0002 drops it)" in sql
    assert "DROP VIEW IF EXISTS db.a_mv ON CLUSTER 'c';" in sql
    assert "DROP TABLE IF EXISTS db.b ON CLUSTER 'c';\n\nDROP TABLE IF EXISTS db.b_local ON CLUSTER 'c';" in sql


def test_index_changes_alter_the_local_table() -> None:
    alter = "ALTER TABLE {database}.t ADD INDEX IF NOT EXISTS i order_id TYPE bloom_filter GRANULARITY 1;\n"
    sql = cluster_schema("db", "c", [(1, "x", table("t")), (2, "y", alter)])
    assert "ALTER TABLE db.t_local ON CLUSTER 'c' ADD INDEX IF NOT EXISTS i order_id TYPE bloom_filter" in sql


def test_a_table_without_order_id_or_shard_key_is_refused() -> None:
    with pytest.raises(ClusterSchemaError, match="migration 0002_extra: table t has no order_id column; add its"):
        cluster_schema("db", "c", [(2, "extra", table("t", column="x"))])


def test_a_statement_without_a_cluster_form_is_refused() -> None:
    message = "migration 0003_alter: no cluster form for the statement 'ALTER TABLE db.hops"
    with pytest.raises(ClusterSchemaError, match=re.escape(message)):
        cluster_schema("db", "c", [(3, "alter", "ALTER TABLE {database}.hops ADD COLUMN x String;\n")])


@pytest.mark.integration
def test_every_statement_of_the_deploy_schema_parses_in_clickhouse() -> None:
    """As written, ON CLUSTER and Replicated engines included: ClickHouse's parser (chDB's
    formatQuery, in its own process) reads each statement; running them needs Keeper, which
    test_clickhouse_http.py replaces with plain engines on a one-shard cluster."""
    script = (
        "import chdb, json, re, sys; c = chdb.connect(':memory:'); out = []\n"
        "for st in re.split(r';[ \\t]*(?:\\n|$)', open(sys.argv[1]).read()):\n"
        "    sql = '\\n'.join(l for l in st.splitlines() if not l.lstrip().startswith('--')).strip()\n"
        "    if sql:\n"
        "        lit = sql.replace('\\\\', '\\\\\\\\').replace(\"'\", \"\\\\'\")\n"
        "        out.append(c.query(f\"SELECT formatQuery('{lit}')\", 'TSV').bytes().decode())\n"
        "c.close(); print(json.dumps(out))"
    )
    done = subprocess.run([sys.executable, "-c", script, str(SCHEMA_FILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    formatted = json.loads(done.stdout.splitlines()[-1])
    ddl = [f for f in formatted if not f.startswith("INSERT")]
    assert len(formatted) == SCHEMA_FILE.read_text().count(";\n") and len(ddl) == len(formatted) - 1
    assert all("ON CLUSTER `{cluster}`" in f or "ON CLUSTER '{cluster}'" in f for f in ddl), ddl[0]
