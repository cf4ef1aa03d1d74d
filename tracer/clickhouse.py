"""The store: hop events, order state and findings in ClickHouse, through clickhouse-connect.

``Store.open(url)`` takes ``chdb:///ABS/DIR`` (embedded chDB, the default; the directory is
created) or ``http(s)://[user:password@]host:port[/database]`` (a ClickHouse server or cluster;
the path names the database, else ``database``). Credentials: from the URL, else
``ORDERTRAIL_CLICKHOUSE_USER`` / ``ORDERTRAIL_CLICKHOUSE_PASSWORD`` when either is set, else
``CLICKHOUSE_USER`` / ``CLICKHOUSE_PASSWORD`` (the names the ClickHouse image takes), from the
``environ`` mapping given to ``open`` and read once there; a password never appears in a message.
Both go through the same client code. ``open`` creates the database and applies the pending
migrations of ``tracer/migrations`` (``NNNN_name.sql``, recorded in ``schema_migrations``), then
sets the TTL of every table to ``ttl_days`` (``None``: no TTL). A database of Distributed tables (a
cluster: ``tracer.clusterschema``) is migrated ON CLUSTER, never by ``open``, which refuses.

Tables (see the migrations): ``hops`` (events by order id, typed), ``otel_traces`` and
``otel_traces_trace_id_ts`` (views over ``hops`` with the OpenTelemetry Collector ClickHouse
exporter's columns, so Grafana's trace view works; a view, not a copy: migration 0003),
``orders`` (latest ``OrderSnapshot``, ReplacingMergeTree by version), ``findings`` (latest
version per (order_id, hop, kind)) and ``trail`` (every record of an order whole, as JSON, keyed
by order id: what ``order()`` reads).

Why ``trail``: a ClickHouse point read costs about 1 ms per part and per column read (chDB here),
so a lookup reading three tables took ~10 ms at 5M events, and one ``doc`` column of one
table ~4 ms. Searches and restores read the typed tables, where filters and indexes apply.

Writes: ``write()`` is one column-oriented insert per table with integer-millisecond times, never
a query per event (``prepare()`` serializes them, Native format, without the client;
``write_prepared()`` inserts them: ``tracer.storewriter`` runs the two on different threads), in
the order hops → findings → orders → trail, so that a crash between them never leaves a stored
order whose raised findings are not stored. It returns once chDB or the server
has written the parts (synchronous inserts, ``async_insert=0``): a kill -9 after it returned loses
nothing (tested); the files are not fsync'd, so a power loss may.

Versions fence a stalled tracer's late writes (docs/kafka.md "Fencing"): ``version = epoch << 36 |
counter``. The epoch is claimed from the store (``owner_epochs``, migration 0004) by every restore
(``open_orders``: a start, a takeover of partitions) before it reads, above every epoch claimed
or written before; the counter numbers this store's rows within it. A tracer that took partitions
over claimed after their previous owner did, so its rows replace the previous owner's, also the
rows that owner writes late after losing them, whatever the clocks say (the versions used to be
each process's wall clock in ns, so a zombie writing late, with a later clock, won). Rows stored
before migration 0004 have such clock versions (about 2^60.6); read as ``epoch << 36`` they name
epochs below the first claim, which is taken above them.
Re-delivered events (same ``event_id``), within a batch or across batches, merge away in the
background and are deduplicated by the readers until then (inserts skip ClickHouse's dedupe pass,
``optimize_on_insert=0``). Where the time of a write goes (200k events in batches of 20k, chDB,
this machine): before migration 0003, ~5 s: hops 40 % (60 % of it the ``otel_traces``
materialized copy, which 0003 removed), trail 25 %, orders 15 %; after, ~3.9 s: trail 37 %, hops
21 %, orders 16 %, findings 7 %, building the columns in Python 20 % (each insert's share includes
clickhouse-connect serializing it, about half of a write is Python). ``LowCardinality`` columns
are sent as plain strings so that the server, not Python, builds their dictionaries.

chDB facts, checked with chdb 4.4 / clickhouse-connect 1.12: one process runs one embedded engine,
on one directory. Several clients (and Stores) on the same directory in one process share it;
opening a different directory while one is open fails until every client of the first is
closed. A second process cannot open a directory another process has open (ClickHouse's status
file lock): ``open`` raises ``StoreError`` saying so. MergeTree tables persist only in a named
database (not ``default``). The client is not thread-safe: every call here holds the Store's lock,
so the tracer thread may write while HTTP handler threads query.

This is the only module that imports clickhouse_connect (and through it chdb); it does so lazily,
so importing it for ``OrderRecord`` costs nothing. ``tracer.memstore.MemStore`` is the in-memory
fake of the same interface.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import msgspec

from tracer.engine import OrderSnapshot
from tracer.errors import StoreError
from tracer.model import OPEN, RESOLVED, Finding, HopEvent
from tracer.stitch import KeyLink, Waiting

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

ENV_USER: Final = "ORDERTRAIL_CLICKHOUSE_USER"
ENV_PASSWORD: Final = "ORDERTRAIL_CLICKHOUSE_PASSWORD"
# Read when neither of ours is set: the ClickHouse image creates its user from these.
ENV_IMAGE_USER: Final = "CLICKHOUSE_USER"
ENV_IMAGE_PASSWORD: Final = "CLICKHOUSE_PASSWORD"
URL_HELP: Final = (
    "chdb:///ABSOLUTE/DIR (embedded) or http(s)://[USER:PASSWORD@]HOST:PORT[/DATABASE] (ClickHouse server)"
)
FINDING_STATUSES: Final = (OPEN, RESOLVED, "all")
_DATABASE_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MIGRATION_RE: Final = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_STATEMENT_END: Final = re.compile(r";[ \t]*(?:\n|$)")
# Synchronous inserts (durable when they return). optimize_on_insert=0: a ReplacingMergeTree insert
# is not deduplicated while it is written (a merge pass per table per batch); merges and the
# readers deduplicate anyway, as they must for rows of different batches.
_SETTINGS: Final = {"async_insert": 0, "max_partitions_per_insert_block": 0, "optimize_on_insert": 0}
_FINAL: Final = " SETTINGS optimize_move_to_prewhere_if_final = 0"  # filters apply to the latest versions
# Table -> the time column its TTL counts from.
_TTL_COLUMNS: Final = {
    "hops": "ts",
    "orders": "last_ts",
    "findings": "detected_at",
    "trail": "ts",
    "order_keys": "ts",
}

_EVENT_COLUMNS: Final = tuple(HopEvent.__struct_fields__)
_FINDING_COLUMNS: Final = tuple(Finding.__struct_fields__)
_SNAPSHOT_COLUMNS: Final = tuple(OrderSnapshot.__struct_fields__)
_EVENT_FIELDS: Final = tuple(map(attrgetter, _EVENT_COLUMNS))
_FINDING_FIELDS: Final = tuple(map(attrgetter, _FINDING_COLUMNS))
_SNAPSHOT_FIELDS: Final = tuple(map(attrgetter, _SNAPSHOT_COLUMNS))
_TRAIL_KINDS: Final = {"order": 0, "event": 1, "finding": 2}  # trail.kind, Enum8: sent as its numbers
_INSERT_COLUMNS: Final = {
    "hops": (*_EVENT_COLUMNS, "ingested_at"),
    "findings": (*_FINDING_COLUMNS, "version"),
    "orders": (*_SNAPSHOT_COLUMNS, "version"),
    "trail": ("order_id", "kind", "id", "version", "ts", "doc"),
    "order_keys": ("value", "key", "order_id", "trace_id", "ts", "version"),
    "stitch_waiting": ("key", "value", "event_id", "partition", "offset", "since", "doc", "done", "version"),
}
# The tables whose rows replace one another by version (the trail's versions are these tables').
_VERSIONED: Final = ("orders", "findings", "order_keys", "stitch_waiting")
# version = epoch << VERSION_SHIFT | counter: 2^28 epochs (a claim per restore; rows from before
# migration 0004 took the first ~26M), 2^36 versions each (a writer going past its epoch's end
# goes on into the next: claims then skip it, see Store.claim_epoch).
VERSION_SHIFT: Final = 36
MAX_EPOCH: Final = (1 << (64 - VERSION_SHIFT)) - 1
_SPILL_MARGIN: Final = 1 << (VERSION_SHIFT - 1)  # versions a late batch may have taken past the newest stored
_EPOCH_COLUMNS: Final = ("epoch", "claimed_at", "owner", "partitions")
# A claim is on every shard's reading side before the claimant reads (a cluster's Distributed table).
_SYNC_DISTRIBUTED: Final = {"insert_distributed_sync": 1}
_MS_COLUMNS: Final = frozenset({"ts", "due_at", "detected_at", "resolved_at", "first_ts", "last_ts", "next_due"})
_ENCODE: Final = msgspec.json.Encoder().encode
_EVENT_DOC: Final = msgspec.json.Decoder(HopEvent).decode
_FINDING_DOC: Final = msgspec.json.Decoder(Finding).decode
_SNAPSHOT_DOC: Final = msgspec.json.Decoder(OrderSnapshot).decode


def _select(columns: Iterable[str]) -> str:
    """A select list giving back a struct's fields in order, times as epoch milliseconds."""
    return ", ".join(f"toUnixTimestamp64Milli(`{c}`)" if c in _MS_COLUMNS else f"`{c}`" for c in columns)


_FINDING_SELECT: Final = _select(_FINDING_COLUMNS)
_SNAPSHOT_SELECT: Final = _select(_SNAPSHOT_COLUMNS)


class PreparedWrite(msgspec.Struct, frozen=True):
    """A batch serialized by ``Store.prepare``: (table, rows, Native-format body) per insert."""

    inserts: tuple[tuple[str, int, bytes], ...]


class OrderRecord(msgspec.Struct, frozen=True):
    """Everything stored about one order, for the lookup."""

    snapshot: OrderSnapshot | None  # None when only events exist (e.g. no journey known yet)
    events: list[HopEvent]  # the whole trail, hops outside journeys too, by (ts, hop), one per event id
    findings: list[Finding]  # the latest version of each, by detected_at


def trail(events: Iterable[HopEvent]) -> list[HopEvent]:
    """Events of one order, one per event id, in event time order."""
    unique = {ev.event_id: ev for ev in events}
    return sorted(unique.values(), key=lambda ev: (ev.ts, ev.hop))


def latest(versions: Iterable[tuple[int, Finding]]) -> list[Finding]:
    """The newest version of each finding identity, by detected_at."""
    newest: dict[tuple[str, str, str], tuple[int, Finding]] = {}
    for version, f in versions:
        key = (f.order_id, f.hop, f.kind)
        if key not in newest or newest[key][0] <= version:
            newest[key] = (version, f)
    return sorted((f for _, f in newest.values()), key=lambda f: (f.detected_at, f.hop, f.kind))


def check_query(limit: int, status: str = OPEN) -> None:
    """The arguments every store checks the same way before reading."""
    if status not in FINDING_STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(FINDING_STATUSES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000:
        raise ValueError(f"limit: {limit!r} must be a whole number from 1 to 1000000")


class Store:
    """ClickHouse (or embedded chDB) storage of ordertrail. Thread-safe; build it with ``open``."""

    def __init__(self, client: Client, database: str, where: str, now_ns: Callable[[], int], owner: str = "") -> None:
        self._client = client
        self._db = database
        self._where = where  # the URL without credentials, for messages
        self._now_ns = now_ns
        self._lock = threading.Lock()
        self._owner = owner  # who claims epochs, as recorded in owner_epochs (host:pid)
        self.epoch = 0  # the epoch claimed last (0: none yet; the first write claims one)
        self._version = 0  # the last version taken
        self._types: dict[str, Sequence[Any]] = {}
        self._server_tz: Any = None  # the client's, for serializing rows without it
        # Content-Encoding of insert bodies: lz4 to a ClickHouse server when the client negotiated
        # it (the default); None in-process (chDB), where compressing would only cost CPU.
        self._write_compression: str | None = None
        self.migrations_applied: list[int] = []  # versions this open() applied, in order

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        *,
        database: str = "ordertrail",
        ttl_days: int | None = None,
        environ: Mapping[str, str] = os.environ,
        now_ns: Callable[[], int] = time.time_ns,
        connect_timeout_s: float = 10.0,
        owner: str | None = None,
    ) -> Store:
        """Connect, create the database, apply pending migrations and the TTL. Raises StoreError.
        ``owner`` names this process in the epochs it claims (default ``host:pid``)."""
        database = _url_database(url) or database
        if not _DATABASE_RE.fullmatch(database):
            raise StoreError(f"database: {database!r} must be letters, digits and '_', not starting with a digit")
        if database == "default":
            raise StoreError("database: 'default' does not keep MergeTree tables in chDB; name another database")
        if ttl_days is not None and (isinstance(ttl_days, bool) or not isinstance(ttl_days, int) or ttl_days < 1):
            raise StoreError(f"ttl_days: {ttl_days!r} must be a whole number of days ≥ 1, or None for no TTL")
        client, where = _connect(url, environ, connect_timeout_s)
        store = cls(client, database, where, now_ns, owner or f"{socket.gethostname()}:{os.getpid()}")
        try:
            store._migrate()
            store._apply_ttl(ttl_days)
            for table in _INSERT_COLUMNS:
                store._types[table] = store._column_types(table)
            store._server_tz = store._client.server_tz
            if getattr(client, "write_compression", None) == "lz4":  # HTTP negotiated it; chDB's is None
                store._write_compression = "lz4"
        except BaseException:
            store.close()
            raise
        return store

    def _migrate(self) -> None:
        db = self._db
        self._command(f"CREATE DATABASE IF NOT EXISTS {db}")
        self._command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
            "applied_at DateTime64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {int(r[0]) for r in self._rows(f"SELECT DISTINCT version FROM {db}.schema_migrations")}
        pending = [m for m in migrations() if m[0] not in done]
        if pending and self._rows(
            f"SELECT 1 FROM system.tables WHERE database = '{db}' AND engine = 'Distributed' LIMIT 1"
        ):  # single-node DDL would run on this node only: a cluster is migrated ON CLUSTER
            raise StoreError(
                f"store {self._where}: database {db} holds a cluster schema and misses migrations "
                f"{', '.join(f'{v:04d}_{n}' for v, n, _ in pending)}; apply them on the cluster first "
                "(python -m tracer.clusterschema prints the cluster schema; see deploy/README.md)"
            )
        for version, name, text in pending:
            for statement in _STATEMENT_END.split(text.replace("{database}", db)):
                if any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines()):
                    self._command(statement, f"migration {version:04d}_{name}")
            self._insert(
                "schema_migrations",
                [[version], [name], [self._now_ns() // 1_000_000]],
                ("version", "name", "applied_at"),
            )
            self.migrations_applied.append(version)

    def _apply_ttl(self, ttl_days: int | None) -> None:
        engines = dict(self._rows(f"SELECT name, engine_full FROM system.tables WHERE database = '{self._db}'"))
        for table, column in _TTL_COLUMNS.items():
            current = re.search(r" TTL (.+?)(?: SETTINGS |$)", str(engines.get(table, "")))
            wanted = None if ttl_days is None else f"toDateTime({column}) + toIntervalDay({ttl_days})"
            if wanted is not None and (current is None or current.group(1) != wanted):
                self._command(f"ALTER TABLE {self._db}.{table} MODIFY TTL {wanted}")
            elif wanted is None and current is not None:
                self._command(f"ALTER TABLE {self._db}.{table} REMOVE TTL")

    def _column_types(self, table: str) -> Sequence[Any]:
        """The insert types of ``table``'s columns, LowCardinality strings sent as plain strings:
        the server converts them as it writes, faster than clickhouse-connect builds their
        dictionaries in Python."""
        from clickhouse_connect.datatypes.registry import get_from_name

        names = _INSERT_COLUMNS[table]
        with self._lock:
            try:
                ctx = self._client.create_insert_context(f"{self._db}.{table}", list(names), column_oriented=True)
            except Exception as exc:
                raise self._error(f"reading the columns of {table}", exc) from exc
        return [get_from_name(t.name.replace("LowCardinality(String)", "String")) for t in ctx.column_types]

    # -- writing --------------------------------------------------------------------------------

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        """Store one batch: one insert per table. Durable when it returns; raises StoreError."""
        self.write_prepared(self.prepare(events, findings, snapshots))

    def prepare(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> PreparedWrite:
        """The Python half of ``write``: versions taken, every table's rows serialized (Native
        format). ``write_prepared`` then only inserts them, mostly without the GIL, so a
        ``tracer.storewriter.StoreWriter`` prepares on the engine's thread and inserts on its own."""
        if not (events or findings or snapshots):
            return PreparedWrite(())
        now = self._now_ns()
        if events and snapshots:  # an event naming no journey or customer is stored with its order's
            known = {s.order_id: s for s in snapshots}
            events = [with_order_context(ev, known.get(ev.order_id)) for ev in events]
        version = self._take_versions(len(findings) + len(snapshots))
        inserts = []
        if events:
            inserts.append(self._native("hops", [*_columns(events, _EVENT_FIELDS), [now // 1_000_000] * len(events)]))
        if findings:
            columns = [*_columns(findings, _FINDING_FIELDS), _versions(version, len(findings))]
            inserts.append(self._native("findings", columns))
        if snapshots:
            columns = [*_columns(snapshots, _SNAPSHOT_FIELDS), _versions(version + len(findings), len(snapshots))]
            inserts.append(self._native("orders", columns))
        inserts.append(self._native("trail", _trail_columns(events, findings, snapshots, version)))
        return PreparedWrite(tuple(inserts))

    def write_prepared(self, prepared: PreparedWrite) -> None:
        """Insert a prepared batch, table by table in ``write``'s order. Durable when it returns."""
        encoding = self._write_compression
        for table, rows, body in prepared.inserts:
            if encoding == "lz4":  # over the network, as clickhouse-connect's own inserts (GIL released)
                body = _lz4_compress(body)
            with self._lock:
                try:
                    self._client.raw_insert(
                        f"{self._db}.{table}",
                        list(_INSERT_COLUMNS[table]),
                        insert_block=body,
                        fmt="Native",
                        compression=encoding,
                    )
                except Exception as exc:
                    raise self._error(f"writing {rows} rows to {table}", exc) from exc

    def _native(self, table: str, columns: Sequence[Sequence[Any]]) -> tuple[str, int, bytes]:
        """(table, rows, the rows in ClickHouse's Native format, uncompressed), built as
        clickhouse-connect's insert builds them, without the client (so without the lock: a
        write in flight on another thread goes on meanwhile)."""
        from clickhouse_connect.driver.insert import InsertContext
        from clickhouse_connect.driver.transform import NativeTransform

        names = list(_INSERT_COLUMNS[table])
        ctx = InsertContext(
            f"{self._db}.{table}", names, self._types[table], columns, column_oriented=True, server_tz=self._server_tz
        )
        try:
            body = b"".join(NativeTransform.build_insert(ctx))
        except Exception as exc:
            raise self._error(f"serializing {len(columns[0])} rows for {table}", exc) from exc
        if body.startswith(b"INSERT INTO "):  # the statement, for a request body: raw_insert sends its own
            body = body[body.index(b"\n") + 1 :]
        return table, len(columns[0]), body

    def _insert(
        self,
        table: str,
        columns: Sequence[Sequence[Any]],
        names: Sequence[str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        with self._lock:
            try:
                self._client.insert(
                    f"{self._db}.{table}",
                    columns,
                    column_names=list(names or _INSERT_COLUMNS[table]),
                    column_types=self._types.get(table) if names is None else None,
                    column_oriented=True,
                    settings=dict(settings) if settings else None,
                )
            except Exception as exc:
                raise self._error(f"writing {len(columns[0])} rows to {table}", exc) from exc

    # -- reading --------------------------------------------------------------------------------

    def order(self, order_id: str) -> OrderRecord | None:
        """Everything stored about one order, or None when nothing is: one point read of ``trail``."""
        rows = self._rows(
            f"SELECT kind, version, doc FROM {self._db}.trail WHERE order_id = {{oid:String}}",
            {"oid": order_id},
            {"max_threads": 1},  # a point read: one thread beats setting up a parallel pipeline
        )
        if not rows:
            return None
        snapshot, newest = None, -1
        for kind, version, doc in rows:
            if kind == "order" and version > newest:
                snapshot, newest = doc, version
        return OrderRecord(
            None if snapshot is None else _SNAPSHOT_DOC(snapshot),
            trail(_EVENT_DOC(doc) for kind, _, doc in rows if kind == "event"),
            latest((version, _FINDING_DOC(doc)) for kind, version, doc in rows if kind == "finding"),
        )

    def orders(
        self, *, customer_id: str | None = None, trace_id: str | None = None, limit: int = 100
    ) -> list[OrderSnapshot]:
        """Orders of a customer and/or a trace id (the latest state of each), most recent first.
        With neither, the most recently active orders."""
        check_query(limit)
        db = self._db
        conds: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        for column, value in (("customer_id", customer_id), ("trace_id", trace_id)):
            if value is not None:
                conds.append(f"{column} = {{{column}:String}}")
                params[column] = value
        if not conds:
            sql = (
                f"SELECT {_SNAPSHOT_SELECT} FROM {db}.orders FINAL "
                f"ORDER BY last_ts DESC, order_id LIMIT {{limit:UInt32}}"
            )
        else:
            # The skip indexes find the orders; their latest versions must still match.
            where = " AND ".join(conds)
            sql = (
                f"SELECT {_SNAPSHOT_SELECT} FROM (SELECT * FROM {db}.orders WHERE order_id IN "
                f"(SELECT order_id FROM {db}.orders WHERE {where}) ORDER BY version DESC LIMIT 1 BY order_id) "
                f"WHERE {where} ORDER BY last_ts DESC, order_id LIMIT {{limit:UInt32}}"
            )
        return [_snapshot(r) for r in self._rows(sql, params)]

    def findings(
        self,
        *,
        status: str = OPEN,
        kind: str | None = None,
        journey: str | None = None,
        order_id: str | None = None,
        limit: int = 1000,
    ) -> list[Finding]:
        """The latest version of each finding matching every filter, most recently detected first."""
        check_query(limit, status)
        conds = ["1"]
        params: dict[str, Any] = {"limit": limit}
        filters = (("status", None if status == "all" else status), ("kind", kind), ("journey", journey))
        for column, value in (*filters, ("order_id", order_id)):
            if value is not None:
                conds.append(f"{column} = {{{column}:String}}")
                params[column] = value
        rows = self._rows(
            f"SELECT {_FINDING_SELECT} FROM {self._db}.findings FINAL WHERE {' AND '.join(conds)} "
            f"ORDER BY detected_at DESC, order_id, hop, kind LIMIT {{limit:UInt32}}{_FINAL}",
            params,
        )
        return [Finding(*r) for r in rows]

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        """The open orders of ``partitions`` (None: all) and their open findings, for ``Tracer.restore``.

        A restore is a handover (a start, or partitions taken over from another tracer), so this
        store first claims a new epoch (``claim_epoch``): what it writes next replaces what the
        previous owner wrote, also what that owner writes late, whatever the clocks say."""
        self.claim_epoch(() if partitions is None else partitions)
        db = self._db
        params: dict[str, Any] = {}
        where = "`open`"
        if partitions is not None:
            params["parts"] = sorted(set(partitions))
            if not params["parts"]:
                return [], []
            where += " AND `partition` IN {parts:Array(UInt32)}"
        snaps = self._rows(f"SELECT {_SNAPSHOT_SELECT} FROM {db}.orders FINAL WHERE {where}{_FINAL}", params)
        findings = self._rows(
            f"SELECT {_FINDING_SELECT} FROM {db}.findings FINAL WHERE status = 'open' AND order_id IN "
            f"(SELECT order_id FROM {db}.orders FINAL WHERE {where}){_FINAL}",
            params,
        )
        return [_snapshot(r) for r in snaps], [Finding(*r) for r in findings]

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        """Those of ``order_ids`` whose latest state is closed (completed or retired): for records
        read again after a restore (``tracer.processor``). Reads by the sort key."""
        if not order_ids:
            return []
        rows = self._rows(
            f"SELECT order_id FROM {self._db}.orders FINAL "
            f"WHERE order_id IN {{ids:Array(String)}} AND NOT `open`{_FINAL}",
            {"ids": sorted(set(order_ids))},
        )
        return [str(r[0]) for r in rows]

    def waiting_at(self, journey: str, hop: str) -> tuple[int, int | None]:
        """How many open orders of ``journey`` await ``hop`` (the order asked about included), and
        the earliest last-event time among them (None when there are none)."""
        rows = self._rows(
            f"SELECT count(), toUnixTimestamp64Milli(min(last_ts)) FROM {self._db}.orders FINAL "
            f"WHERE `open` AND journey = {{journey:String}} AND next_hop = {{hop:String}}{_FINAL}",
            {"journey": journey, "hop": hop},
        )
        n = int(rows[0][0])
        return n, (int(rows[0][1]) if n else None)

    def waiting(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Every step open orders await: (journey, hop) -> (how many, earliest last-event time).
        One scan of the open orders; callers that ask often cache it (it answers every step)."""
        rows = self._rows(
            f"SELECT journey, next_hop, count(), toUnixTimestamp64Milli(min(last_ts)) FROM {self._db}.orders FINAL "
            f"WHERE `open` AND next_hop != '' GROUP BY journey, next_hop{_FINAL}"
        )
        return {(str(j), str(h)): (int(n), int(t)) for j, h, n, t in rows}

    def hop_count(self, hop: str, start_ms: int, end_ms: int) -> int:
        """Distinct events of ``hop`` with event time in ``(start_ms, end_ms]`` (scheduled volume)."""
        rows = self._rows(
            f"SELECT uniqExact(event_id) FROM {self._db}.hops WHERE hop = {{hop:String}} "
            "AND ts > fromUnixTimestamp64Milli({a:Int64}) AND ts <= fromUnixTimestamp64Milli({b:Int64})",
            {"hop": hop, "a": start_ms, "b": end_ms},
        )
        return int(rows[0][0])

    def missing_keys(
        self, hop: str, key: str, before: tuple[int, int], window: tuple[int, int], sample: int = 10
    ) -> tuple[int, int, list[str]]:
        """Per-key recurrence: the keys (an event column or attribute) that had ``hop`` in the
        ``before`` window, how many of them did not have it in ``window``, and a sample of those.
        Windows are ``(start, end]`` in event-time ms. One query, computed in the store."""
        expr = f"`{key}`" if key in KEY_COLUMNS else "attrs[{key:String}]"
        where = (
            "hop = {hop:String} AND ts > fromUnixTimestamp64Milli({%s:Int64}) "
            "AND ts <= fromUnixTimestamp64Milli({%s:Int64})"
        )
        sql = (
            f"SELECT count(), countIf(k NOT IN (SELECT {expr} FROM {self._db}.hops WHERE {where % ('c', 'd')})), "
            f"groupArrayIf({int(sample)})(k, k NOT IN (SELECT {expr} FROM {self._db}.hops WHERE {where % ('c', 'd')})) "
            f"FROM (SELECT DISTINCT {expr} AS k FROM {self._db}.hops WHERE {where % ('a', 'b')} AND k != '')"
        )
        params = {"hop": hop, "key": key, "a": before[0], "b": before[1], "c": window[0], "d": window[1]}
        expected, missing, examples = self._rows(sql, params)[0]
        return int(expected), int(missing), sorted(str(k) for k in examples)

    def amounts(self, order_ids: Sequence[str], attr: str = "amount") -> dict[str, float]:
        """The ``amount`` attribute of each order that has one (from any of its events), for the
        value an incident puts at risk. Values that are not numbers are left out."""
        if not order_ids:
            return {}
        rows = self._rows(
            f"SELECT order_id, any(attrs[{{attr:String}}]) FROM {self._db}.hops "
            f"WHERE order_id IN {{ids:Array(String)}} AND mapContains(attrs, {{attr:String}}) GROUP BY order_id",
            {"ids": list(order_ids), "attr": attr},
        )
        return parse_amounts((str(oid), str(v)) for oid, v in rows)

    def count_events(self) -> int:
        """Stored hop events, one per event id."""
        return int(self._rows(f"SELECT count() FROM {self._db}.hops FINAL")[0][0])

    # -- stitching (tracer.stitch) ---------------------------------------------------------------

    def write_stitch(self, links: Sequence[KeyLink], waiting: Sequence[Waiting], done: Sequence[Waiting]) -> None:
        """New key links, events that began to wait for theirs, and ones that stopped waiting."""
        if not (links or waiting or done):
            return
        version = self._take_versions(len(waiting) + len(done))
        if links:
            self._insert(
                "order_keys",
                [
                    [k.value for k in links],
                    [k.key for k in links],
                    [k.order_id for k in links],
                    [k.trace_id for k in links],
                    [k.ts for k in links],
                    [version] * len(links),
                ],
            )
        rows = [*((w, False) for w in waiting), *((w, True) for w in done)]
        if rows:
            self._insert(
                "stitch_waiting",
                [
                    [w.key for w, _ in rows],
                    [w.value for w, _ in rows],
                    [w.event.event_id for w, _ in rows],
                    [w.partition for w, _ in rows],
                    [w.offset for w, _ in rows],
                    [w.since for w, _ in rows],
                    [_ENCODE(w.event) for w, _ in rows],
                    [d for _, d in rows],
                    list(range(version, version + len(rows))),
                ],
            )

    def key_links(self, pairs: Sequence[tuple[str, str]]) -> list[KeyLink]:
        """The stored links of (key, value) pairs."""
        if not pairs:
            return []
        rows = self._rows(
            f"SELECT key, value, argMax(order_id, version), argMax(trace_id, version), "
            f"toUnixTimestamp64Milli(argMax(ts, version)) FROM {self._db}.order_keys "
            f"WHERE value IN {{values:Array(String)}} GROUP BY key, value",
            {"values": sorted({v for _, v in pairs})},
        )
        wanted = set(pairs)
        return [KeyLink(str(k), str(v), str(o), str(t), int(ts)) for k, v, o, t, ts in rows if (k, v) in wanted]

    def order_for_key(self, value: str) -> KeyLink | None:
        """The order another key belongs to (any key name), for the lookup; the newest link."""
        rows = self._rows(
            f"SELECT key, value, argMax(order_id, version), argMax(trace_id, version), "
            f"toUnixTimestamp64Milli(argMax(ts, version)), max(version) AS v FROM {self._db}.order_keys "
            f"WHERE value = {{value:String}} GROUP BY key, value ORDER BY v DESC LIMIT 1",
            {"value": value},
        )
        return (
            KeyLink(str(rows[0][0]), str(rows[0][1]), str(rows[0][2]), str(rows[0][3]), int(rows[0][4]))
            if rows
            else None
        )

    def waiting_events(self) -> list[Waiting]:
        """Events still waiting for their link, for ``Stitcher.restore``."""
        rows = self._rows(
            f"SELECT key, value, `partition`, `offset`, since, doc FROM {self._db}.stitch_waiting FINAL "
            f"WHERE NOT done{_FINAL}"
        )
        return [Waiting(str(k), str(v), _EVENT_DOC(doc), int(p), int(o), int(s)) for k, v, p, o, s, doc in rows]

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the client, under the lock ---------------------------------------------------------------

    def claim_epoch(self, partitions: Iterable[int] = ()) -> int:
        """Claim the next owner epoch: above every epoch claimed and every version stored, in any
        versioned table, by anyone. Durable before it returns; the versions taken after it are
        ``epoch << VERSION_SHIFT`` and up. Raises StoreError.

        Why a claim in the store rather than the consumer group's generation: the rows live here,
        so the order of claims is the order the store itself saw the restores in, on either bus;
        a group's generation starts over when the group is deleted or renamed, and rows of a
        newer owner would then lose. A tracer claims before it reads the open orders of
        partitions it gained, and so after their previous owner claimed (that owner claimed
        before it read them, and lost them later): the previous owner's late rows lose.

        The rounding up by ``_SPILL_MARGIN``: a writer whose counter passed its epoch's end goes
        on into the next one. A late batch may do so unseen (its versions were taken, not yet
        stored), so a newest stored version in the top half of its epoch skips the next one."""
        db = self._db
        newest = max(int(r[0]) for table in _VERSIONED for r in self._rows(f"SELECT max(version) FROM {db}.{table}"))
        claimed = int(self._rows(f"SELECT max(epoch) FROM {db}.owner_epochs")[0][0])
        with self._lock:
            mine = self._version
        epoch = max(claimed + 1, ((max(newest, mine) + _SPILL_MARGIN) >> VERSION_SHIFT) + 1)
        if epoch > MAX_EPOCH:
            raise StoreError(
                f"store {self._where}: no owner epoch is left to claim (the newest is {epoch - 1}, at most "
                f"{MAX_EPOCH}); the versions of database {db} are exhausted"
            )
        self._insert(
            "owner_epochs",
            [[epoch], [self._now_ns() // 1_000_000], [self._owner], [sorted(set(partitions))]],
            _EPOCH_COLUMNS,
            settings=_SYNC_DISTRIBUTED,
        )
        with self._lock:
            self.epoch = max(self.epoch, epoch)
            self._version = max(self._version, epoch << VERSION_SHIFT)
        return epoch

    def _take_versions(self, n: int) -> int:
        """The first of ``n`` consecutive new versions. A store that writes before any restore
        (a backtest, a tool) claims an epoch first, so its rows too replace older ones."""
        if not self.epoch:
            self.claim_epoch()
        with self._lock:
            first = self._version + 1
            self._version += n
        return first

    def _rows(
        self, sql: str, params: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                result = self._client.query(sql, parameters=dict(params or {}), settings=dict(settings or {}))
                return [tuple(r) for r in result.result_rows]
            except Exception as exc:
                raise self._error("a query", exc) from exc

    def _command(self, sql: str, what: str = "a schema change") -> None:
        with self._lock:
            try:
                self._client.command(sql)
            except Exception as exc:
                raise self._error(what, exc) from exc

    def _error(self, what: str, exc: Exception) -> StoreError:
        return StoreError(f"store {self._where}: {what} failed: {_first_line(exc)}")


KEY_COLUMNS: Final = ("order_id", "customer_id", "service", "trace_id", "journey")


def parse_amounts(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    out = {}
    for oid, text in pairs:
        try:
            value = float(text)
        except ValueError:
            continue
        if value == value and abs(value) != float("inf"):
            out[oid] = value
    return out


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration shipped with the package, in version order."""
    found = []
    for entry in resources.files("tracer.migrations").iterdir():
        m = _MIGRATION_RE.fullmatch(entry.name)
        if m is not None:
            found.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def with_order_context(ev: HopEvent, snapshot: OrderSnapshot | None) -> HopEvent:
    """An event naming no journey or customer takes its order's, as the store records it."""
    if snapshot is None or ((ev.journey or not snapshot.journey) and (ev.customer_id or not snapshot.customer_id)):
        return ev
    return msgspec.structs.replace(
        ev, journey=ev.journey or snapshot.journey, customer_id=ev.customer_id or snapshot.customer_id
    )


def _lz4_compress(body: bytes) -> bytes:
    import lz4.frame  # type: ignore[import-untyped]

    return bytes(lz4.frame.compress(body))


def _columns(records: Sequence[Any], fields: Sequence[Callable[[Any], Any]]) -> list[list[Any]]:
    """Column-oriented values of structs, one list per field getter."""
    return [list(map(get, records)) for get in fields]


def _versions(first: int, n: int) -> list[int]:
    return list(range(first, first + n))


def _trail_columns(
    events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot], version: int
) -> list[list[Any]]:
    """The batch's records whole, for ``trail``; findings and snapshots keep the versions of their tables."""
    n_e, n_f, n_s = len(events), len(findings), len(snapshots)
    order_ids: list[str] = [ev.order_id for ev in events]
    order_ids += [f.order_id for f in findings]
    order_ids += [s.order_id for s in snapshots]
    kinds = [_TRAIL_KINDS["event"]] * n_e + [_TRAIL_KINDS["finding"]] * n_f + [_TRAIL_KINDS["order"]] * n_s
    ids: list[str] = [ev.event_id for ev in events]
    ids += [f"{f.hop}/{f.kind}" for f in findings]
    ids += [""] * n_s
    times: list[int] = [ev.ts for ev in events]
    times += [f.detected_at for f in findings]
    times += [s.last_ts for s in snapshots]
    versions = [0] * n_e + _versions(version, n_f + n_s)
    docs = [*map(_ENCODE, events), *map(_ENCODE, findings), *map(_ENCODE, snapshots)]
    return [order_ids, kinds, ids, versions, times, docs]


def _snapshot(row: Sequence[Any]) -> OrderSnapshot:
    values = list(row)
    i = _SNAPSHOT_COLUMNS.index("pending")
    values[i] = [tuple(p.values()) if isinstance(p, dict) else tuple(p) for p in values[i]]  # named tuples: dicts
    return OrderSnapshot(*values)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


# -- connecting -----------------------------------------------------------------------------------


def _connect(url: str, environ: Mapping[str, str], timeout_s: float) -> tuple[Client, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "chdb":
        return _connect_chdb(url, parts.netloc, unquote(parts.path))
    if scheme in ("http", "https"):
        return _connect_http(url, environ, timeout_s)
    raise StoreError(f"store URL {_redact(url)!r}: scheme {scheme or '(none)'!r} is not supported; use {URL_HELP}")


def _connect_chdb(url: str, netloc: str, path: str) -> tuple[Client, str]:
    if netloc or not path.startswith("/"):
        raise StoreError(
            f"store URL {url!r}: a chDB store needs an absolute directory, e.g. chdb:///var/lib/ordertrail"
        )
    where = f"chdb://{path}"
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"store {where}: cannot create the directory: {exc.strerror or exc}") from None
    import clickhouse_connect

    try:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}", settings=dict(_SETTINGS))
    except Exception as exc:
        text = _first_line(exc)
        other = re.search(r"already initialized with path '([^']*)'", text)
        if other is not None:
            raise StoreError(
                f"store {where}: this process already runs chDB on {other.group(1)}, and chDB allows one "
                "directory per process; close every store on that directory first, or use it"
            ) from None
        if _locked_by_another_process(Path(path) / "status"):
            raise StoreError(
                f"store {where}: the directory is in use by another process (chDB lets one process open a "
                "directory at a time); stop the other ordertrail, use another --data directory, or share a "
                "ClickHouse server with --store http://HOST:8123"
            ) from None
        raise StoreError(f"store {where}: cannot open chDB: {text}") from None
    return client, where


def _locked_by_another_process(status_file: Path) -> bool:
    """ClickHouse holds an exclusive lock on ``DIR/status`` while an engine has the directory open."""
    try:
        fd = os.open(status_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _connect_http(url: str, environ: Mapping[str, str], timeout_s: float) -> tuple[Client, str]:
    parts = urlsplit(url)
    where = _redact(url)
    if not parts.hostname:
        raise StoreError(f"store URL {where!r}: names no host; use {URL_HELP}")
    if parts.query or parts.fragment:
        raise StoreError(f"store URL {where!r}: a query or fragment is not supported; use {URL_HELP}")
    secure = parts.scheme.lower() == "https"
    try:
        port = parts.port or (8443 if secure else 8123)
    except ValueError:
        raise StoreError(f"store URL {where!r}: the port is not a number from 1 to 65535") from None
    env_user, env_password = _env_credentials(environ)
    username = unquote(parts.username) if parts.username else env_user
    password = unquote(parts.password) if parts.password else env_password
    import clickhouse_connect

    try:
        client = clickhouse_connect.get_client(
            host=parts.hostname,
            port=port,
            username=username,
            password=password,
            secure=secure,
            connect_timeout=timeout_s,
            send_receive_timeout=max(timeout_s, 60.0),
            settings=dict(_SETTINGS),
        )
    except Exception as exc:
        text = _first_line(exc)
        if "AUTHENTICATION_FAILED" in text or "code: 516" in text:
            raise StoreError(
                f"store {where}: the ClickHouse server refused user {username!r}: the password is wrong or the "
                f"user does not exist; set them in the URL, {ENV_USER}/{ENV_PASSWORD} or "
                f"{ENV_IMAGE_USER}/{ENV_IMAGE_PASSWORD}"
            ) from None
        raise StoreError(
            f"store {where}: cannot reach the ClickHouse server ({text}); is it running, and are "
            f"the host, port and credentials ({ENV_USER}/{ENV_PASSWORD}) right?"
        ) from None
    return client, where


def _env_credentials(environ: Mapping[str, str]) -> tuple[str, str]:
    """(user, password): ours when either is set, else the ClickHouse image's; never one of each."""
    ours = ENV_USER in environ or ENV_PASSWORD in environ
    user, password = (ENV_USER, ENV_PASSWORD) if ours else (ENV_IMAGE_USER, ENV_IMAGE_PASSWORD)
    return environ.get(user) or "default", environ.get(password, "")


def _url_database(url: str) -> str:
    """The database named by the path of an http(s) URL (``http://host:8123/ordertrail``), or ''."""
    parts = urlsplit(url)
    return unquote(parts.path).strip("/") if parts.scheme.lower() in ("http", "https") else ""


def _redact(url: str) -> str:
    """The URL with any password replaced, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()
