"""Benchmark of the store (issue 2): lookup by order id, ``tracer.clickhouse.Store.order``, on a
chDB database holding millions of events.

The child (``python -m bench.store lookup``) streams the workload of ``bench.workload`` through
``decode_line``, a ``Tracer`` and ``Store.write`` in batches, as a replay does, then copies the
same events inside chDB into the reference's one table (``bench.reference``: MergeTree ordered by
order id). Then it times random lookups of existing orders, alternating ``Store.order`` (order
state, trail and findings: three queries, decoded into structs) with the reference's single
``SELECT`` of the order's rows, after a few untimed lookups of each.
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path
from typing import Any

from bench import Context, Row, Section, Target, percentile, report, run_child, workload
from bench.engine import store_available

LOOKUP_TARGET = Target("value", "<=", 15)
_WARMUP = 20


def lookup(ctx: Context) -> Section:
    scale = ctx.scale
    section = Section(
        reference="one SELECT of the order's rows from the reference's single MergeTree table (ORDER BY order_id, "
        "ts) holding the same events, in the same chDB, alternating with Store.order"
    )
    if not store_available():
        section.rows.append(
            Row("Store.order p99", None, "ms", None, LOOKUP_TARGET, why="tracer.clickhouse is not available")
        )
        return section
    db = ctx.scratch("chdb-lookup")
    result = run_child(
        "bench.store",
        "lookup",
        "--orders",
        str(scale.lookup_orders),
        "--lookups",
        str(scale.lookups),
        "--journeys",
        str(ctx.journeys),
        "--db",
        str(db),
        "--batch",
        str(scale.batch),
    )
    shutil.rmtree(db, ignore_errors=True)
    ours, ref = result["store"], result["reference"]
    at = f"{result['events']:,} events, {result['orders']:,} orders"
    ctx.log(f"  Store.order p50 {ours['p50']:.2f} ms, p99 {ours['p99']:.2f} ms at {at}")
    section.rows.append(Row(f"Store.order p50 at {at}", ours["p50"], "ms", ref["p50"]))
    section.rows.append(Row(f"Store.order p99 at {at}", ours["p99"], "ms", ref["p99"], LOOKUP_TARGET))
    section.notes.append(
        f"{result['lookups']:,} lookups of random existing orders after {_WARMUP} untimed ones; Store.order max "
        f"{ours['max']:.2f} ms, mean {ours['mean']:.2f} ms; reference max {ref['max']:.2f} ms. Each lookup "
        f"returned on average {result['hops_per_lookup']:.1f} hops and {result['findings_per_lookup']:.2f} findings. "
        f"The floor of any query here (`SELECT 1` through clickhouse-connect into chDB): p50 "
        f"{result['select_1']['p50']:.2f} ms, p99 {result['select_1']['p99']:.2f} ms."
    )
    section.notes.append(
        f"Loading ({result['load_seconds']:.0f} s including generating the events, decoding and the engine): "
        f"Store.write {result['store_seconds']:.0f} s in batches of {scale.batch:,} events "
        f"({result['store_seconds'] / result['events'] * 1e6:.1f} µs/event); the reference table "
        f"was filled from ordertrail.hops inside chDB ({result['reference_seconds']:.0f} s). Active parts when timing: "
        + ", ".join(f"{t} {n}" for t, n in sorted(result["parts"].items()))
        + ". No OPTIMIZE: background merges run as they would in service."
    )
    return section


def measure_lookup(orders: int, lookups: int, journeys_path: Path, db: Path, batch: int) -> dict[str, Any]:
    import clickhouse_connect

    from bench import reference
    from tracer.clickhouse import Store
    from tracer.engine import Tracer
    from tracer.events import decode_line
    from tracer.journeys import load_journeys

    url = f"chdb://{db.resolve()}"
    store = Store.open(url)
    client = clickhouse_connect.get_client(dsn=url)
    reference.create_table(client)
    tracer = Tracer(load_journeys(journeys_path), track_snapshots=True)
    events: list[Any] = []
    store_s = 0.0
    clock = -1
    n = 0

    def flush() -> None:
        nonlocal store_s
        began = time.perf_counter()
        store.write(events, tracer.drain_findings(), tracer.drain_snapshots())
        store_s += time.perf_counter() - began
        events.clear()

    started = time.perf_counter()
    for line in workload.lines(workload.Spec(orders)):
        n += 1
        ev = decode_line(line)
        if ev.ts > clock:
            clock = ev.ts
            tracer.advance(clock)
        tracer.on_event(ev)
        events.append(ev)
        if len(events) >= batch:
            flush()
    flush()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    client.command(  # the same rows, copied inside chDB (the insert path is not what is measured here)
        f"INSERT INTO {reference.TABLE} ({', '.join(reference.COLUMNS)}) "
        f"SELECT {', '.join(reference.COLUMNS)} FROM ordertrail.hops"
    )
    ref_s = time.perf_counter() - started
    parts = {
        f"{db_name}.{table}": int(count)
        for db_name, table, count in client.query(
            "SELECT database, table, count() FROM system.parts WHERE active AND database IN ('ordertrail', 'bench') "
            "GROUP BY database, table"
        ).result_rows
    }

    floor: list[float] = []
    for _ in range(200):  # what any query costs through clickhouse-connect and chDB
        t0 = time.perf_counter()
        client.query("SELECT 1")
        floor.append((time.perf_counter() - t0) * 1000)
    rng = random.Random(7)
    ids = [f"ord-{workload.FIRST_ORDER + rng.randrange(orders):09d}" for _ in range(lookups + _WARMUP)]
    sql = f"SELECT * FROM {reference.TABLE} WHERE order_id = {{oid:String}} ORDER BY ts"
    ours: list[float] = []
    theirs: list[float] = []
    hops = findings = 0
    for i, oid in enumerate(ids):
        t0 = time.perf_counter()
        record = store.order(oid)
        t1 = time.perf_counter()
        rows = client.query(sql, parameters={"oid": oid}).result_rows
        t2 = time.perf_counter()
        if record is None or not rows:
            raise RuntimeError(f"order {oid} was not found (store: {record is not None}, reference: {len(rows)} rows)")
        if i >= _WARMUP:
            ours.append((t1 - t0) * 1000)
            theirs.append((t2 - t1) * 1000)
            hops += len(record.events)
            findings += len(record.findings)
    stored = store.count_events()
    store.close()
    client.close()
    return {
        "events": n,
        "stored": stored,
        "orders": orders,
        "lookups": lookups,
        "load_seconds": load_s,
        "store_seconds": store_s,
        "reference_seconds": ref_s,
        "parts": parts,
        "hops_per_lookup": hops / lookups,
        "findings_per_lookup": findings / lookups,
        "select_1": _latency(floor),
        "store": _latency(ours),
        "reference": _latency(theirs),
    }


def _latency(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    lk = sub.add_parser("lookup")
    lk.add_argument("--orders", type=int, required=True)
    lk.add_argument("--lookups", type=int, required=True)
    lk.add_argument("--journeys", type=Path, required=True)
    lk.add_argument("--db", type=Path, required=True)
    lk.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    report(measure_lookup(args.orders, args.lookups, args.journeys, args.db, args.batch))


if __name__ == "__main__":
    _main()
