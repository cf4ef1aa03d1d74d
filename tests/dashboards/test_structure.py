"""The dashboards and provisioning files as Grafana loads them: valid JSON and YAML, unique ids,
layout present, every datasource uid provisioned, links that lead somewhere, order ids quoted."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.dashboards.grafana import (
    CLICKHOUSE,
    DASHBOARD_FILES,
    DATASOURCES_FILE,
    PROMETHEUS,
    PROVIDERS_FILE,
    dashboards,
    panels,
    queries,
    uid_of,
)

MIN_SCHEMA_VERSION = 36  # Grafana 9.0+: datasources referenced by {type, uid}


def provisioned() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(DATASOURCES_FILE.read_text(encoding="utf-8"))
    return {ds["uid"]: ds for ds in doc["datasources"]}


def test_the_files_the_deployment_references_exist() -> None:
    names = {p.name for p in DASHBOARD_FILES}
    assert names == {"overview.json", "order.json"}
    assert DATASOURCES_FILE.is_file() and PROVIDERS_FILE.is_file()


def test_datasources_are_prometheus_and_clickhouse_with_otel_traces() -> None:
    ds = provisioned()
    assert ds[PROMETHEUS]["type"] == "prometheus"
    ch = ds[CLICKHOUSE]
    assert ch["type"] == "grafana-clickhouse-datasource"
    traces = ch["jsonData"]["traces"]
    assert traces["defaultTable"] == "otel_traces" and traces["otelEnabled"] is True
    # the column names are those of tracer/migrations' otel_traces (a view over hops since 0003)
    sql = (DATASOURCES_FILE.parents[3] / "tracer" / "migrations" / "0003_otel_views.sql").read_text()
    view = sql[sql.index(".otel_traces AS SELECT") : sql.index("\nFROM ", sql.index(".otel_traces AS SELECT"))]
    for key, column in traces.items():
        if key.endswith("Column"):
            assert re.search(rf" AS {column},?$", view, re.M), f"traces.{key}: {column} is not a column of otel_traces"


def test_the_provider_loads_the_dashboards_from_files() -> None:
    doc = yaml.safe_load(PROVIDERS_FILE.read_text(encoding="utf-8"))
    [provider] = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


@pytest.mark.parametrize("dashboard", dashboards(), ids=lambda d: d["uid"])
def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= MIN_SCHEMA_VERSION
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    for p in panels(dashboard):
        grid = p.get("gridPos")
        assert grid is not None, f"panel {p['id']} has no gridPos"
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), p["id"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, p["id"]
        assert p.get("title"), f"panel {p['id']} has no title"


def test_panels_do_not_overlap() -> None:
    for dashboard in dashboards():
        cells: dict[tuple[int, int], int] = {}
        for p in panels(dashboard):
            g = p["gridPos"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{dashboard['uid']}: panels {cells[(x, y)]} and {p['id']} overlap"
                    cells[(x, y)] = p["id"]


def test_every_datasource_uid_is_provisioned_with_its_type() -> None:
    ds = provisioned()
    for dashboard in dashboards():
        refs: list[Any] = [p.get("datasource") for p in panels(dashboard) if p["type"] != "row"]
        refs += [t.get("datasource") for p in panels(dashboard) for t in p.get("targets", ())]
        refs += [v.get("datasource") for v in dashboard["templating"]["list"] if v.get("datasource")]
        for ref in refs:
            uid = uid_of(ref)
            assert uid in ds, f"{dashboard['uid']}: datasource {ref!r} is not provisioned"
            assert ref["type"] == ds[uid]["type"], f"{dashboard['uid']}: datasource {ref!r} has the wrong type"


def test_queries_go_to_a_datasource_of_their_language() -> None:
    for dashboard in dashboards():
        for panel in panels(dashboard):
            for t in panel.get("targets", ()):
                uid = uid_of(t.get("datasource")) or uid_of(panel.get("datasource"))
                assert ("expr" in t) == (uid == PROMETHEUS), f"{dashboard['uid']} panel {panel['id']}"
                assert ("rawSql" in t) == (uid == CLICKHOUSE), f"{dashboard['uid']} panel {panel['id']}"
                if uid == CLICKHOUSE:
                    assert t["editorType"] == "sql" and t["queryType"] in ("table", "timeSeries", "traces")


def test_links_lead_to_dashboards_that_exist() -> None:
    uids = {d["uid"] for d in dashboards()}
    text = "".join(p.read_text() for p in DASHBOARD_FILES)
    for uid in re.findall(r"/d/([\w-]+)", text):
        assert uid in uids, f"a link leads to /d/{uid}, which no dashboard has"


def test_the_order_id_is_always_quoted_as_an_sql_string() -> None:
    # Grafana's sqlstring format quotes and escapes: an order id with a quote cannot change the query
    for dashboard in dashboards():
        for q in queries(dashboard):
            if q.datasource == CLICKHOUSE:
                for m in re.finditer(r"\$\{?(order_id|trace_id)(:\w+)?\}?", q.text):
                    assert m.group(2) == ":sqlstring", f"{q.where}: {m.group(0)} must be ${{{m.group(1)}:sqlstring}}"
