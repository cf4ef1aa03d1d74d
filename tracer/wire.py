"""The shapes msgspec decodes a hop event into (CONTRACT §1), before ``tracer.events`` checks
the rules msgspec cannot, and the outcome of decoding a body.

They live apart from ``tracer.events`` because that module is compiled with mypyc
(``tracer.native``) and msgspec reads a Struct's field types from its annotations, which a
compiled module does not keep: these must stay interpreted. This module imports only msgspec
and the event model.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from tracer.model import HopEvent

MAX_ID: Final = 128


class Wire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    order_id: str
    hop: str
    ts: str | int | float
    event_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    service: str | None = None
    status: str | None = None
    journey: str | None = None
    customer_id: str | None = None
    attrs: dict[str, str] | None = None


class Peek(msgspec.Struct, gc=False):
    """The fields that place an order in its journey, all the processor reads of a record it may
    have stored already (a rebuilt partition's replay window, ``Processor._recall_closed``):
    decoding only these costs a tenth of ``decode_line``. Other fields are skipped unchecked; the
    record's own checks come after, when the step decodes it whole."""

    order_id: str
    hop: str
    journey: str | None = None  # null allowed, as in Wire: such an event is valid


_Text = Annotated[str, Meta(min_length=1, max_length=MAX_ID)]


class Valid(Wire, forbid_unknown_fields=True, gc=False):
    """``Wire`` with the rules msgspec checks at no cost (lengths, the status): an item that
    decodes into it needs only the fast path's checks (``tracer.events``). (Its patterns and
    nested constraints cost more than those checks do.) One that does not is decoded again as a
    ``Wire``, for the reason."""

    order_id: _Text
    event_id: _Text | None = None
    service: _Text | None = None
    status: Literal["ok", "error"] | None = None
    journey: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    customer_id: _Text | None = None


class Batch(msgspec.Struct):
    """The outcome of decoding one body: events in input order, rejections by item index."""

    events: list[HopEvent]
    rejected: list[tuple[int, str]]
