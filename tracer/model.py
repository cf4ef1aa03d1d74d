"""The event model: hop events, findings, and the names they share (CONTRACT §1, §3).

Field names are constants here so that Kafka headers, log keys, ClickHouse columns and the JSON
wire format cannot drift apart. Times inside ordertrail are integer epoch milliseconds; on the
wire they are RFC 3339 UTC with milliseconds (``format_ts``).

This module imports only ``tracer.ids`` of ordertrail (the derived ids, compiled there) and only
msgspec from outside the standard library.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Final

import msgspec

from tracer.ids import derive_event_id as derive_event_id  # defined there: compiled
from tracer.ids import derive_trace_id as derive_trace_id

# Hop event fields (CONTRACT §1).
ORDER_ID: Final = "order_id"
HOP: Final = "hop"
TS: Final = "ts"
EVENT_ID: Final = "event_id"
TRACE_ID: Final = "trace_id"
SPAN_ID: Final = "span_id"
PARENT_SPAN_ID: Final = "parent_span_id"
SERVICE: Final = "service"
STATUS: Final = "status"
JOURNEY: Final = "journey"
CUSTOMER_ID: Final = "customer_id"
ATTRS: Final = "attrs"
EVENT_FIELDS: Final = (
    ORDER_ID,
    HOP,
    TS,
    EVENT_ID,
    TRACE_ID,
    SPAN_ID,
    PARENT_SPAN_ID,
    SERVICE,
    STATUS,
    JOURNEY,
    CUSTOMER_ID,
    ATTRS,
)

STATUS_OK: Final = "ok"
STATUS_ERROR: Final = "error"

# Finding kinds and states (CONTRACT §2–3).
MISSING: Final = "missing"
STALLED: Final = "stalled"
UNCONFIRMED: Final = "unconfirmed"
FAILED: Final = "failed"
FINDING_KINDS: Final = (MISSING, STALLED, UNCONFIRMED, FAILED)
OPEN: Final = "open"
RESOLVED: Final = "resolved"

# Order statuses (CONTRACT §5), most severe last.
IN_PROGRESS: Final = "in_progress"
COMPLETED: Final = "completed"
ORDER_STATUSES: Final = (IN_PROGRESS, COMPLETED, STALLED, UNCONFIRMED, MISSING, FAILED)


class HopEvent(msgspec.Struct, frozen=True, gc=False):
    """One validated hop of one order. ``ts`` is epoch milliseconds (event time)."""

    order_id: str
    hop: str
    ts: int
    event_id: str
    trace_id: str
    span_id: str = ""
    parent_span_id: str = ""
    service: str = ""
    status: str = STATUS_OK
    journey: str = ""
    customer_id: str = ""
    attrs: dict[str, str] = {}


class Finding(msgspec.Struct, frozen=True, gc=False):
    """What the tracer concluded about one awaited or failed hop of one order (CONTRACT §3).

    Times are epoch milliseconds; ``resolved_at`` and ``late_by_ms`` are ``None`` while open.
    The identity of a finding is (order_id, hop, kind): re-deriving it yields the same id.
    """

    order_id: str
    journey: str
    kind: str
    hop: str
    after: str
    due_at: int
    detected_at: int
    status: str = OPEN
    resolved_at: int | None = None
    late_by_ms: int | None = None
    trace_id: str = ""
    customer_id: str = ""

    @property
    def finding_id(self) -> str:
        return finding_id(self.order_id, self.hop, self.kind)

    def to_wire(self) -> dict[str, object]:
        """The JSON object of CONTRACT §3, times as RFC 3339 strings."""
        return {
            "order_id": self.order_id,
            "journey": self.journey,
            "kind": self.kind,
            "hop": self.hop,
            "after": self.after,
            "due_at": format_ts(self.due_at),
            "detected_at": format_ts(self.detected_at),
            "status": self.status,
            "resolved_at": None if self.resolved_at is None else format_ts(self.resolved_at),
            "late_by_ms": self.late_by_ms,
            "trace_id": self.trace_id,
            "customer_id": self.customer_id or None,
        }


class OrderSnapshot(msgspec.Struct, frozen=True):
    """What the store keeps of an order: enough for the lookup and to restore it exactly. The
    engine (``tracer.engine``) makes them; they are here, interpreted, because msgspec reads
    their field types from annotations a compiled module does not keep."""

    order_id: str
    partition: int
    journey: str
    trace_id: str
    customer_id: str
    status: str
    hops: list[str]  # journey hops reported or implied, in journey order
    hop_ts: list[int]
    implied: list[bool]
    first_ts: int
    last_ts: int
    next_hop: str
    next_due: int  # 0 when nothing is awaited
    open: bool  # still held by the tracer (not completed or retired)
    seen_mask: int
    implied_mask: int
    raised_mask: int
    eids: list[int]
    pending: list[tuple[str, int, bool]]


def finding_id(order_id: str, hop: str, kind: str) -> str:
    """Stable identity of a finding, the same in every process and after every restart."""
    raw = f"{order_id}\x1f{hop}\x1f{kind}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def event_to_wire(ev: HopEvent) -> dict[str, object]:
    """The JSON object of CONTRACT §1 for an event, optional fields left out when empty."""
    out: dict[str, object] = {
        ORDER_ID: ev.order_id,
        HOP: ev.hop,
        TS: format_ts(ev.ts),
        EVENT_ID: ev.event_id,
        TRACE_ID: ev.trace_id,
    }
    for name, value in (
        (SPAN_ID, ev.span_id),
        (PARENT_SPAN_ID, ev.parent_span_id),
        (SERVICE, ev.service),
        (JOURNEY, ev.journey),
        (CUSTOMER_ID, ev.customer_id),
    ):
        if value:
            out[name] = value
    if ev.status != STATUS_OK:
        out[STATUS] = ev.status
    if ev.attrs:
        out[ATTRS] = dict(ev.attrs)
    return out


def format_ts(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC with milliseconds: ``2026-11-22T10:02:03.123Z``."""
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def now_ms() -> int:
    """Wall-clock epoch milliseconds; used only at the edges (clocks are injected inside)."""
    return int(datetime.now(tz=UTC).timestamp() * 1000)


# The stitcher's records (tracer.stitch, which is compiled: msgspec reads a Struct's annotations,
# which a compiled module does not keep).
class KeyLink(msgspec.Struct, frozen=True, gc=False):
    """``value`` of key ``key`` belongs to order ``order_id`` (learned from an event at ``ts``)."""

    key: str
    value: str
    order_id: str
    trace_id: str
    ts: int


class Waiting(msgspec.Struct, frozen=True, gc=False):
    """An event reported under ``value`` of key ``key`` whose order is not known yet."""

    key: str
    value: str
    event: HopEvent
    partition: int
    offset: int
    since: int  # the pipeline clock when it began to wait (0: not stamped yet)
