"""The reference loop: the least any program doing ordertrail's job has to do, as fast as plain
Python does it. ordertrail's numbers are reported as ratios to it, measured in the same run.

* ``throughput``: decode each NDJSON line into a dict with msgspec, turn its time into epoch
  milliseconds, keep per-order state as a dict of hop → time, and (with ``--db``) insert the
  events column-oriented into chDB in batches: one MergeTree table of ten columns, ordered by order
  id. No validation, no ids, no deadlines, no findings.
* ``phases``: decoding and the state update timed in separate passes, to show where time goes.
* ``memory``: the same dict-of-dicts state for N open orders (customer id and two hop times each),
  as an RSS delta.

Run as ``python -m bench.reference throughput|phases|memory ...`` (a fresh interpreter per measurement);
it prints one JSON object. Imports msgspec and, for the insert, clickhouse-connect with chDB.
"""

from __future__ import annotations

import argparse
import gc
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from bench import report, rss_bytes, rss_growth, streaming_gc, workload

TABLE = "bench.ref_events"
COLUMNS = (
    "order_id",
    "hop",
    "ts",
    "event_id",
    "trace_id",
    "span_id",
    "service",
    "status",
    "customer_id",
    "attrs",
)
DDL = f"""
CREATE TABLE {TABLE} (
    order_id String,
    hop LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    event_id String,
    trace_id String,
    span_id String,
    service LowCardinality(String),
    status LowCardinality(String),
    customer_id String,
    attrs Map(String, String)
) ENGINE = MergeTree ORDER BY (order_id, ts)
"""


def throughput(lines: list[bytes], db: Path | None, batch: int) -> dict[str, Any]:
    """Events per second of the reference loop over ``lines`` (with a chDB insert when ``db``)."""
    client = None
    if db is not None:
        import clickhouse_connect

        client = clickhouse_connect.get_client(dsn=f"chdb://{db.resolve()}")
        create_table(client)
    decode = msgspec.json.decode
    fromisoformat = datetime.fromisoformat
    orders: dict[str, dict[str, int]] = {}
    columns: list[list[Any]] = [[] for _ in COLUMNS]
    order_c, hop_c, ts_c, eid_c, trace_c, span_c, service_c, status_c, customer_c, attrs_c = columns
    insert_s = 0.0
    started = time.perf_counter()
    for line in lines:
        ev = decode(line)
        ts = ev["ts"]
        if isinstance(ts, str):
            dt = fromisoformat(ts)
            ts = int(dt.timestamp()) * 1000 + dt.microsecond // 1000
        order_id = ev["order_id"]
        hop = ev["hop"]
        state = orders.get(order_id)
        if state is None:
            orders[order_id] = state = {}
        state[hop] = ts
        if client is None:
            continue
        order_c.append(order_id)
        hop_c.append(hop)
        ts_c.append(ts)
        eid_c.append(ev.get("event_id", ""))
        trace_c.append(ev.get("trace_id", ""))
        span_c.append(ev.get("span_id", ""))
        service_c.append(ev.get("service", ""))
        status_c.append(ev.get("status", "ok"))
        customer_c.append(ev.get("customer_id", ""))
        attrs_c.append(ev.get("attrs", {}))
        if len(order_c) >= batch:
            insert_s += insert(client, columns)
    if client is not None and order_c:
        insert_s += insert(client, columns)
    seconds = time.perf_counter() - started
    stored = 0
    if client is not None:
        stored = int(client.query(f"SELECT count() FROM {TABLE}").result_rows[0][0])
        client.close()
    return {
        "events": len(lines),
        "seconds": seconds,
        "events_per_s": len(lines) / seconds,
        "store_seconds": insert_s,
        "orders": len(orders),
        "stored": stored,
    }


def phases(lines: list[bytes]) -> dict[str, Any]:
    """Seconds per event of decoding (with the time) and of the state update, in separate passes."""
    decode = msgspec.json.decode
    fromisoformat = datetime.fromisoformat
    started = time.perf_counter()
    decoded = []
    for line in lines:
        ev = decode(line)
        ts = ev["ts"]
        if isinstance(ts, str):
            dt = fromisoformat(ts)
            ev["ts"] = int(dt.timestamp()) * 1000 + dt.microsecond // 1000
        decoded.append(ev)
    decode_s = time.perf_counter() - started
    orders: dict[str, dict[str, int]] = {}
    started = time.perf_counter()
    for ev in decoded:
        state = orders.get(ev["order_id"])
        if state is None:
            orders[ev["order_id"]] = state = {}
        state[ev["hop"]] = ev["ts"]
    state_s = time.perf_counter() - started
    return {"events": len(lines), "decode_us": decode_s / len(lines) * 1e6, "state_us": state_s / len(lines) * 1e6}


def create_table(client: Any) -> None:
    """The reference's one table, in the database ``bench``."""
    client.command("CREATE DATABASE IF NOT EXISTS bench")
    client.command(DDL)


def insert(client: Any, columns: list[list[Any]]) -> float:
    """Insert the buffered columns (in ``COLUMNS`` order) and empty them; returns the seconds taken."""
    started = time.perf_counter()
    client.insert(TABLE, columns, column_names=COLUMNS, column_oriented=True)
    for column in columns:
        column.clear()
    return time.perf_counter() - started


def memory(orders: int) -> dict[str, Any]:
    """RSS per open order of dict-of-dicts state: {order id: {customer_id, hop: ts, hop: ts}}."""
    state: dict[str, dict[str, str | int]] = {}
    gc.collect()
    before = rss_bytes()
    start = workload.START_MS
    customers = max(100, orders // 3)
    for i in range(orders):
        ts = start + i // 100
        for hop, at in ((workload.CHECKOUT, ts), (workload.PAYMENT, ts + 500)):
            order_id = f"ord-{workload.FIRST_ORDER + i:09d}"  # a fresh string per event, as decoding makes
            st = state.get(order_id)
            if st is None:
                state[order_id] = st = {"customer_id": f"cus-{i % customers:07d}"}
            st[hop] = at
    return {"orders": len(state), **rss_growth(before, orders)}


def read_lines(path: Path) -> list[bytes]:
    """The non-empty lines of an NDJSON file, read before any clock starts."""
    return [line for line in path.read_bytes().split(b"\n") if line]


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    tp = sub.add_parser("throughput")
    tp.add_argument("--input", type=Path, required=True)
    tp.add_argument("--db", type=Path, help="chDB directory; without it, no insert")
    tp.add_argument("--batch", type=int, default=10_000)
    ph = sub.add_parser("phases")
    ph.add_argument("--input", type=Path, required=True)
    mem = sub.add_parser("memory")
    mem.add_argument("--orders", type=int, required=True)
    args = parser.parse_args()
    if args.what == "throughput":
        gc_setting = streaming_gc()  # as ordertrail's side runs: the ratio compares the loops
        report({**throughput(read_lines(args.input), args.db, args.batch), **gc_setting})
    elif args.what == "phases":
        gc_setting = streaming_gc()
        report({**phases(read_lines(args.input)), **gc_setting})
    else:
        report(memory(args.orders))


if __name__ == "__main__":
    _main()
