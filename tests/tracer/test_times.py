"""Durations (``250ms`` … ``1d``, combined largest unit first) and instants (RFC 3339 with a zone,
or epoch milliseconds) — parsing, the errors that say what is allowed, and formatting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.model import format_ts
from tracer.times import MAX_TS_MS, MIN_TS_MS, _parse_careful, format_duration, parse_duration, parse_ts

# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("30s", 30_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("0s", 0),
        ("1h30m", 5_400_000),
        ("1d2h3m4s5ms", 93_784_005),
        ("90s", 90_000),
    ],
)
def test_a_duration_is_parsed_into_milliseconds(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    "text",
    ["", "5", "5S", "1.5s", "-5s", " 5s", "5s ", "5 s", "5sec", "30s5m", "1m1m", "1ms0s", "s", "1h 30m"],
)
def test_a_malformed_duration_is_refused_naming_the_value_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration like 250ms, 30s") as err:
        parse_duration(text)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize("value", [None, 30, 1.5, True, ["30s"]])
def test_a_duration_that_is_not_text_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


def test_units_must_go_from_largest_to_smallest_so_typos_surface() -> None:
    assert parse_duration("5m30s") == 330_000
    with pytest.raises(ValueError, match="largest unit first"):
        parse_duration("30s5m")


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0s"), (250, "250ms"), (1500, "1s500ms"), (90_000, "1m30s"), (86_400_000, "1d"), (90_061_001, "1d1h1m1s1ms")],
)
def test_a_duration_is_formatted_in_its_shortest_spelling(ms: int, text: str) -> None:
    assert format_duration(ms) == text


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=400 * 86_400_000))
def test_formatting_then_parsing_a_duration_gives_it_back(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms


# -- instants ----------------------------------------------------------------------------------

NOV22 = 1_795_341_723_123  # 2026-11-22T10:02:03.123Z


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-11-22T10:02:03.123Z", NOV22),
        ("2026-11-22T10:02:03.123z", NOV22),
        ("2026-11-22t10:02:03.123Z", NOV22),
        ("2026-11-22 10:02:03.123Z", NOV22),
        ("2026-11-22T10:02:03Z", NOV22 - 123),
        ("2026-11-22T10:02:03.1Z", NOV22 - 23),
        ("2026-11-22T10:02:03.123999Z", NOV22),
        ("2026-11-22T10:02:03.123+00:00", NOV22),
        ("2026-11-22T12:02:03.123+02:00", NOV22),
        ("2026-11-22T04:32:03.123-05:30", NOV22),
    ],
)
def test_an_rfc3339_time_with_a_zone_is_parsed_into_utc_epoch_milliseconds(text: str, ms: int) -> None:
    assert parse_ts(text) == ms


def test_epoch_milliseconds_are_taken_as_they_are() -> None:
    assert parse_ts(NOV22) == NOV22


def test_fractional_epoch_milliseconds_are_truncated() -> None:
    assert parse_ts(NOV22 + 0.9) == NOV22


def test_epoch_seconds_are_refused_with_a_hint_to_give_milliseconds() -> None:
    hint = r"1795341723 is before 2000-01-01 \(it looks like seconds; give milliseconds\)"
    with pytest.raises(ValueError, match=hint):
        parse_ts(NOV22 // 1000)


def test_epoch_microseconds_are_refused_as_after_2100() -> None:
    with pytest.raises(ValueError, match=r"after 2100-01-01 \(microseconds\?\)"):
        parse_ts(NOV22 * 1000)


def test_the_accepted_range_is_2000_up_to_2100() -> None:
    assert parse_ts(MIN_TS_MS) == MIN_TS_MS
    assert parse_ts(MAX_TS_MS - 1) == MAX_TS_MS - 1
    with pytest.raises(ValueError, match="before 2000-01-01"):
        parse_ts(MIN_TS_MS - 1)
    with pytest.raises(ValueError, match="outside 2000–2100"):
        parse_ts("1999-12-31T23:59:59.999Z")


@pytest.mark.parametrize("text", ["2026-11-22T10:02:03.123", "2026-11-22T10:02:03", "2026-11-22 10:02:03.5"])
def test_a_naive_time_is_refused_asking_for_a_zone(text: str) -> None:
    with pytest.raises(ValueError, match="has no time zone; add Z for UTC"):
        parse_ts(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22",
        "20261122T100203Z",
        "2026-W47-7T10:00:00Z",
        "2026-11-22T10:02Z",
        "2026-11-22T10Z",
        "2026-11-22T10:02:03,5Z",
        "2026-11-22T10:02:03+0200",
        "2026-11-22T10:02:03+02",
        "2026-11-22T10:02:03.Z",
        "2026-11-22T10:02:60.000Z",
        "2026-02-30T10:02:03.123Z",
        "2026-11-22T10:02:+3.123Z",
        "2026-11-22T10:02:03.12aZ",
        " 2026-11-22T10:02:03.123Z",
        "1795341723123",
        "yesterday",
        "",
    ],
)
def test_text_that_is_not_rfc3339_is_refused_naming_it_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not RFC 3339 with a time zone") as err:
        parse_ts(text)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize("value", [True, None, [NOV22], {"ts": NOV22}, float("nan"), float("inf")])
def test_a_time_of_another_type_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="is not RFC 3339"):
        parse_ts(value)


def test_a_long_bad_value_is_shown_truncated() -> None:
    with pytest.raises(ValueError) as err:
        parse_ts("x" * 500)
    assert len(str(err.value)) < 200


def test_format_ts_writes_utc_with_milliseconds() -> None:
    assert format_ts(NOV22) == "2026-11-22T10:02:03.123Z"
    assert format_ts(NOV22 - 123) == "2026-11-22T10:02:03.000Z"


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=MIN_TS_MS, max_value=MAX_TS_MS - 1))
def test_formatting_then_parsing_a_time_gives_it_back(ms: int) -> None:
    assert parse_ts(format_ts(ms)) == ms


@settings(max_examples=500, deadline=None)
@given(
    st.tuples(
        st.sampled_from(["1999", "2000", "2026", "2099", "2100", "20a6"]),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 24),
        st.integers(0, 60),
        st.integers(0, 61),
        st.integers(0, 999),
    ),
    st.lists(st.tuples(st.integers(0, 23), st.sampled_from("0123456789 -:.TtZz+x٣")), max_size=2),
)
def test_the_wire_form_memo_gives_what_the_careful_parse_gives(
    parts: tuple[str, int, int, int, int, int, int], damage: list[tuple[int, str]]
) -> None:
    y, mo, d, h, mi, s, ms = parts
    chars = list(f"{y}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}Z")
    for at, c in damage:
        chars[at] = c
    text = "".join(chars)
    try:
        expected: int | str = _parse_careful(text)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: int | str = parse_ts(text)
    except ValueError as exc:
        got = str(exc)
    assert got == expected
