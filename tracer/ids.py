"""The ids ordertrail derives when a hop does not carry them: an order's default trace id and a
hop's default event id (CONTRACT §1). Stable hashes, the same in every process and after every
restart.

Compiled with the hot path (``tracer.native``): decoding derives an event id for every hop sent
without one, and the engine asks for the trace id of every order whose hops carry the derived
one. ``tracer.model`` re-exports both; this module imports only the standard library.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

# Keyed hash states to copy: a copy and an update cost less than a new keyed blake2b.
_TRACE_HASH: Final[Any] = hashlib.blake2b(digest_size=16, person=b"ordertrail-trace")
_EVENT_HASH: Final[Any] = hashlib.blake2b(digest_size=16, person=b"ordertrail-event")
_ZERO_TRACE: Final = "0" * 32
_ONE_TRACE: Final = "0" * 31 + "1"  # all zeros is not a valid trace id

_TRACE_IDS: Final[dict[str, str]] = {}  # order id -> derived trace id, for the orders of late
_TRACE_IDS_MAX: Final = 4096  # small: hops of an order come close together; it must not hold memory


def derive_trace_id(order_id: str) -> str:
    """The trace id every hop of an order shares when no context was propagated. Remembered for
    the most recent orders: their next hops, and the engine, ask again."""
    found = _TRACE_IDS.get(order_id)
    if found is None:
        h = _TRACE_HASH.copy()
        h.update(order_id.encode())
        found = str(h.hexdigest())
        if found == _ZERO_TRACE:
            found = _ONE_TRACE
        if len(_TRACE_IDS) >= _TRACE_IDS_MAX:
            _TRACE_IDS.clear()
        _TRACE_IDS[order_id] = found
    return found


def derive_event_id(order_id: str, hop: str, ts_ms: int) -> str:
    """The default event id: a stable hash of (order_id, hop, ts)."""
    h = _EVENT_HASH.copy()
    h.update(f"{order_id}\x1f{hop}\x1f{ts_ms}".encode())
    return str(h.hexdigest())
