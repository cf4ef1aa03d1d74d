"""Every ClickHouse query of the dashboards runs on chDB with the real schema (``Store.open``
applies tracer/migrations) over rows the real tracer wrote, and returns the columns its panel
shows, with rows. Grafana's variables and macros are expanded as Grafana expands them."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from tests.dashboards.grafana import CLICKHOUSE, Query, dashboards, expand, queries
from tracer.clickhouse import Store
from tracer.engine import Tracer
from tracer.events import validate
from tracer.journeys import load_journeys
from tracer.model import HopEvent

pytestmark = pytest.mark.integration

DEMO_JOURNEYS = Path(__file__).resolve().parents[2] / "ordertrail" / "demo_journeys.yaml"
DATABASE = "ordertrail"
NOW_S = int(time.time())
T = (NOW_S - 1800) * 1000  # the orders happened half an hour ago: inside every default time range
TRACE_COLUMNS = [
    "traceID",
    "spanID",
    "parentSpanID",
    "serviceName",
    "operationName",
    "startTime",
    "duration",
    "tags",
    "serviceTags",
    "statusCode",
]
# (dashboard uid, panel title or variable name, refId or variable name) -> the columns the panel
# shows (table columns, link overrides, bar gauge fields; the plugin's trace frame).
EXPECTED: dict[tuple[str, str, str], list[str]] = {
    ("ordertrail-overview", "Funnel: orders reaching each hop", "A"): ["hop", "orders"],
    ("ordertrail-overview", "Stuck orders by edge", "A"): [
        "journey",
        "after",
        "hop",
        "kind",
        "orders",
        "customers",
        "since",
        "example_order",
    ],
    ("ordertrail-overview", "Findings detected, by kind", "A"): ["time", "kind", "findings"],
    ("ordertrail-overview", "Open findings", "A"): [
        "detected_at",
        "journey",
        "kind",
        "hop",
        "after",
        "due_at",
        "order_id",
        "customer_id",
    ],
    ("ordertrail-order", "Order", "A"): [
        "order_id",
        "journey",
        "status",
        "next_hop",
        "next_due",
        "first_ts",
        "last_ts",
        "customer_id",
        "trace_id",
        "open",
    ],
    ("ordertrail-order", "Trace ${trace_id}", "A"): TRACE_COLUMNS,
    ("ordertrail-order", "Hops", "A"): [
        "ts",
        "hop",
        "status",
        "service",
        "journey",
        "event_id",
        "trace_id",
        "span_id",
        "parent_span_id",
    ],
    ("ordertrail-order", "Findings", "A"): [
        "kind",
        "hop",
        "after",
        "status",
        "due_at",
        "detected_at",
        "resolved_at",
        "late_by_ms",
    ],
    ("ordertrail-order", "Traces of this order", "A"): ["trace_id", "spans", "services", "first_span", "last_span"],
    ("ordertrail-order", "trace_id", "trace_id"): ["trace_id"],
}
QUOTED_ORDER = "o'brien-7"  # an order id with a quote: the dashboards must still find it


def hop(order_id: str, name: str, at_s: float, **fields: Any) -> HopEvent:
    return validate({"order_id": order_id, "hop": name, "ts": T + int(at_s * 1000), **fields})


def orders() -> list[HopEvent]:
    """A small day of the demo shop: complete, failed, missing, late and stalled orders."""
    trace, root = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    return [
        hop("ord-1", "checkout.placed", 0, customer_id="c-1", service="web", trace_id=trace, span_id=root),
        hop("ord-1", "payment.authorized", 2, service="payments", trace_id=trace, parent_span_id=root),
        hop("ord-1", "inventory.reserved", 4, service="warehouse", trace_id=trace),
        hop("ord-1", "email.confirmation_sent", 5, service="mailer", trace_id=trace),
        hop("ord-1", "fulfilment.shipped", 30, service="warehouse", trace_id=trace),
        hop("ord-2", "checkout.placed", 1, customer_id="c-2", service="web"),
        hop("ord-2", "payment.authorized", 3, status="error", service="payments", attrs={"reason": "declined"}),
        hop("ord-3", "checkout.placed", 2, customer_id="c-3", service="web"),
        hop("ord-4", "checkout.placed", 3, customer_id="c-4", service="web"),
        hop(QUOTED_ORDER, "checkout.placed", 4, customer_id="c-5", service="web"),
        hop("r-1", "refund.requested", 5, customer_id="c-1", service="support"),
    ]


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """chDB with the real schema and what the real tracer derived from ``orders()`` (ord-3's
    payment arrives after its deadline: a resolved finding)."""
    path = tmp_path_factory.mktemp("dashboards-chdb")
    store = Store.open(f"chdb://{path}", database=DATABASE)
    try:
        tracer = Tracer(load_journeys(DEMO_JOURNEYS))
        events = orders()
        for ev in events:
            tracer.advance(ev.ts)
            tracer.on_event(ev)
        tracer.advance(T + 120_000)  # two minutes on: deadlines passed
        store.write(events, tracer.drain_findings(), tracer.drain_snapshots())
        store.write(events[:5], [], [])  # ord-1's hops delivered again (at least once): one span each
        late = [hop("ord-3", "payment.authorized", 125, service="payments")]
        tracer.advance(late[0].ts)
        tracer.on_event(late[0])
        store.write(late, tracer.drain_findings(), tracer.drain_snapshots())
        yield path
    finally:
        store.close()


@pytest.fixture(scope="module")
def client(chdb_dir: Path) -> Iterator[Any]:
    c = clickhouse_connect.get_client(dsn=f"chdb://{chdb_dir}")
    yield c
    c.close()


def run(client: Any, q: Query, values: Mapping[str, Sequence[str]]) -> Any:
    sql = expand(q.text, values, sql=True, from_s=NOW_S - 6 * 3600, to_s=NOW_S)
    try:
        return client.query(sql)
    except Exception as exc:
        raise AssertionError(f"{q.where} fails on chDB: {exc}\n{sql}") from exc


def key(q: Query) -> tuple[str, str, str]:
    return (q.dashboard, q.panel["title"] if q.panel is not None else q.ref, q.ref)


def name(q: Query) -> str:
    return "/".join(key(q))


def clickhouse_queries() -> list[Query]:
    return [q for d in dashboards() for q in queries(d) if q.datasource == CLICKHOUSE]


def test_every_clickhouse_query_has_its_expected_columns_listed() -> None:
    assert {key(q) for q in clickhouse_queries()} == set(EXPECTED)


def order_values(client: Any, order_id: str) -> dict[str, Sequence[str]]:
    """The order dashboard's variables, resolved as Grafana does: the trace id from its query."""
    values: dict[str, Sequence[str]] = {"database": [DATABASE], "order_id": [order_id]}
    [var] = [q for q in clickhouse_queries() if q.panel is None and q.ref == "trace_id"]
    rows = run(client, var, values).result_rows
    values["trace_id"] = [rows[0][0]] if rows else [""]
    return values


@pytest.mark.parametrize("q", [q for q in clickhouse_queries() if q.dashboard == "ordertrail-overview"], ids=name)
def test_overview_query_returns_its_columns_and_rows(client: Any, q: Query) -> None:
    values = {"database": [DATABASE], "journey": ["web_order", "refund"]}
    result = run(client, q, values)
    assert list(result.column_names) == EXPECTED[key(q)], q.where
    assert result.result_rows, f"{q.where}: no rows over the test data"
    if q.panel is not None and q.panel["targets"][0]["queryType"] == "timeSeries":
        assert result.column_types[0].name.startswith("DateTime"), f"{q.where}: the first column must be the time"


@pytest.mark.parametrize("order_id", ["ord-3", QUOTED_ORDER])
@pytest.mark.parametrize("q", [q for q in clickhouse_queries() if q.dashboard == "ordertrail-order"], ids=name)
def test_order_query_returns_its_columns_and_the_orders_rows(client: Any, q: Query, order_id: str) -> None:
    result = run(client, q, order_values(client, order_id))
    assert list(result.column_names) == EXPECTED[key(q)], q.where
    assert result.result_rows, f"{q.where}: no rows for order {order_id!r}"


def test_the_trace_panel_shows_every_hop_of_the_order_as_a_span(client: Any) -> None:
    [q] = [q for q in clickhouse_queries() if q.panel is not None and q.panel["type"] == "traces"]
    result = run(client, q, order_values(client, "ord-1"))
    spans = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    assert [s["operationName"] for s in spans] == [
        "checkout.placed",
        "payment.authorized",
        "inventory.reserved",
        "email.confirmation_sent",
        "fulfilment.shipped",
    ]
    assert {s["traceID"] for s in spans} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    assert spans[0]["serviceName"] == "web" and spans[0]["startTime"] == pytest.approx(T, abs=1)
    assert spans[1]["parentSpanID"] == "00f067aa0ba902b7"
    assert {"key": "app.order.id", "value": "ord-1"} in spans[0]["tags"]


def test_stuck_orders_name_each_stuck_edge(client: Any) -> None:
    [q] = [q for q in clickhouse_queries() if q.panel is not None and q.panel["title"] == "Stuck orders by edge"]
    result = run(client, q, {"database": [DATABASE], "journey": ["web_order", "refund"]})
    edges = {(r[0], r[1], r[2], r[3]): r[4] for r in result.result_rows}
    assert edges[("web_order", "checkout.placed", "payment.authorized", "missing")] == 2  # ord-4 and o'brien-7
    assert ("web_order", "checkout.placed", "payment.authorized", "failed") in edges  # ord-2
    assert ("refund", "refund.requested", "refund.approved", "missing") in edges
    assert all(r[7] != "ord-3" for r in result.result_rows)  # its payment came late: resolved, not stuck
