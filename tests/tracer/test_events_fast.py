"""The decoder's two ways agree (hypothesis): what msgspec refuses as a ``Valid`` the careful
way (``_checked``, which words every rejection) refuses too, and on what it accepts the fast way
(``_fast``) accepts exactly what the careful way accepts and builds the same event (accepting
less would only be slower; accepting more, wrong). Values
are drawn near the rules' edges: lengths at and past the limits, characters that are not
printable, upper-case hex, all-zero trace ids, times in each accepted form and just outside."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.errors import EventError
from tracer.events import _checked, _fast
from tracer.model import HopEvent
from tracer.wire import Valid, Wire

TEXT = st.text(alphabet="ab1-_. \t\n\x00é\u200bZ", max_size=3) | st.sampled_from(
    ["", "a" * 64, "a" * 65, "a" * 128, "a" * 129]
)
HEX = st.text(alphabet="0123456789abcdefABg", min_size=15, max_size=33) | st.sampled_from(["0" * 32, "0" * 16])
TS = (
    st.sampled_from(
        [
            "2026-11-22T10:02:03.123Z",
            "2026-11-22T10:02:03.123z",
            "2026-11-22 10:02:03.123Z",
            "2026-11-22T10:02:59.999Z",
            "2026-11-22T10:02:60.000Z",
            "2026-11-22T10:02:03.12aZ",
            "2026-11-22T10:02:03.1234Z",
            "2026-11-22T10:02:03Z",
            "2026-11-22T10:02:03.123+02:00",
            "2026-11-22T10:02:03.123",
            "1999-12-31T23:59:59.999Z",
            "2000-01-01T00:00:00.000Z",
            "2099-12-31T23:59:59.999Z",
            "2100-01-01T00:00:00.000Z",
            "2026-13-22T10:02:03.123Z",
            "2026-11-22T10:02:0٣.123Z",
        ]
    )
    | st.integers(min_value=946_684_799_000, max_value=4_102_444_801_000)
    | st.floats(allow_nan=True)
)
ATTRS = st.dictionaries(TEXT, TEXT, max_size=3) | st.sampled_from(
    [{"k" * 64: "v" * 1024}, {"k" * 65: "v"}, {"k": "v" * 1025}, {str(i): "v" for i in range(65)}]
)
ITEMS = st.fixed_dictionaries(
    {
        "order_id": TEXT,
        "hop": st.sampled_from(["payment.authorized", "Payment", "", "h" * 64, "h" * 65, "a b", "ok\n"]),
        "ts": TS,
    },
    optional={
        "event_id": st.none() | TEXT | HEX,
        "trace_id": st.none() | HEX,
        "span_id": st.none() | HEX,
        "parent_span_id": st.none() | HEX,
        "service": st.none() | TEXT,
        "status": st.none() | st.sampled_from(["ok", "error", "OK", "", "failed"]),
        "journey": st.none() | TEXT,
        "customer_id": st.none() | TEXT,
        "attrs": st.none() | ATTRS,
    },
)


def careful(item: dict[str, object]) -> HopEvent | None:
    try:
        return _checked(msgspec.convert(item, Wire))
    except EventError:
        return None


@settings(max_examples=1000, deadline=None)
@given(ITEMS)
def test_the_fast_way_accepts_what_the_careful_way_accepts_and_builds_the_same_event(item: dict[str, object]) -> None:
    expected = careful(item)
    try:
        valid = msgspec.convert(item, Valid)
    except msgspec.ValidationError:
        assert expected is None  # msgspec refused it: so does the careful way
        return
    fast = _fast(valid)
    assert (fast is None) == (expected is None)
    if fast is not None and expected is not None:
        assert msgspec.structs.asdict(fast) == msgspec.structs.asdict(expected)


def test_a_full_valid_event_takes_the_fast_way() -> None:
    item: dict[str, object] = {
        "order_id": "ord-1",
        "hop": "payment.authorized",
        "ts": "2026-11-22T10:02:03.123Z",
        "span_id": "00f067aa0ba902b7",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "service": "payments",
        "status": "error",
        "journey": "web_order",
        "customer_id": "cus-1",
        "attrs": {"psp": "adyen"},
    }
    fast = _fast(msgspec.convert(item, Valid))
    expected = careful(item)
    assert fast is not None and expected is not None
    assert msgspec.structs.asdict(fast) == msgspec.structs.asdict(expected)


def test_the_fast_way_reads_the_fields_in_the_order_both_structs_declare() -> None:
    """``_fast`` reads a decoded item's fields by position (one ``astuple``): Valid, which
    redeclares some of Wire's fields, must keep Wire's order."""
    order = (
        "order_id", "hop", "ts", "event_id", "trace_id", "span_id", "parent_span_id", "service", "status",
        "journey", "customer_id", "attrs",
    )  # fmt: skip
    assert Wire.__struct_fields__ == Valid.__struct_fields__ == order
