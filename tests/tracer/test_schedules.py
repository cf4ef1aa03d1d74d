"""The ``schedules:`` section of the journeys file: cron due times, windows, validation."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from ordertrail.cli import describe
from tracer.errors import JourneysError
from tracer.journeys import parse_journeys
from tracer.schedules import Cron, Schedule

BASE = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 5m}
"""


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def iso(at: int | None, zone: str = "UTC") -> str:
    assert at is not None
    return datetime.fromtimestamp(at / 1000, ZoneInfo(zone)).isoformat()


def test_a_monthly_cron_is_due_on_the_first_at_six() -> None:
    cron = Cron.parse("0 6 1 * *")
    assert iso(cron.next_after(ms("2026-11-22T10:00:00+00:00"))) == "2026-12-01T06:00:00+00:00"
    assert iso(cron.last_at_or_before(ms("2026-11-22T10:00:00+00:00"))) == "2026-11-01T06:00:00+00:00"
    assert cron.last_at_or_before(ms("2026-11-01T06:00:00+00:00")) == ms("2026-11-01T06:00:00+00:00")
    assert cron.next_after(ms("2026-11-01T06:00:00+00:00")) == ms("2026-12-01T06:00:00+00:00")


@pytest.mark.parametrize(
    ("expr", "after", "due"),
    [
        ("*/15 * * * *", "2026-11-22T10:07:30+00:00", "2026-11-22T10:15:00+00:00"),
        ("0 9-17/4 * * *", "2026-11-22T13:00:00+00:00", "2026-11-22T17:00:00+00:00"),
        ("30 2 * * mon-fri", "2026-11-21T00:00:00+00:00", "2026-11-23T02:30:00+00:00"),  # Sat -> Mon
        ("0 0 * * 7", "2026-11-22T00:00:00+00:00", "2026-11-29T00:00:00+00:00"),  # 7 is Sunday too
        ("0 0 29 2 *", "2026-03-01T00:00:00+00:00", "2028-02-29T00:00:00+00:00"),
        ("0 0 13 * 5", "2026-11-22T00:00:00+00:00", "2026-11-27T00:00:00+00:00"),  # 13th OR Friday
        ("@daily", "2026-11-22T10:00:00+00:00", "2026-11-23T00:00:00+00:00"),
        ("0 12 1,15 jan,jul *", "2026-11-22T00:00:00+00:00", "2027-01-01T12:00:00+00:00"),
    ],
)
def test_cron_fields(expr: str, after: str, due: str) -> None:
    assert iso(Cron.parse(expr).next_after(ms(after))) == due


def test_cron_is_read_in_its_time_zone_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    cron = Cron.parse("0 6 * * *", berlin)
    # 2027-03-28: Berlin moves from UTC+1 to UTC+2; 06:00 local is 05:00 then 04:00 UTC.
    assert iso(cron.next_after(ms("2027-03-27T12:00:00+00:00"))) == "2027-03-28T04:00:00+00:00"
    assert iso(cron.next_after(ms("2027-03-26T12:00:00+00:00"))) == "2027-03-27T05:00:00+00:00"


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("0 6 1 *", "has 4 fields"),
        ("60 * * * *", "minute '60' is not a number from 0 to 59"),
        ("0 6 9-3 * *", "a range must go from low to high"),
        ("*/0 * * * *", "step after '/' must be a whole number above 0"),
        ("0 6 * * funday", "day-of-week 'funday' is not a number from 0 to 7"),
    ],
)
def test_bad_cron_says_which_field(expr: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Cron.parse(expr)


def test_windows_follow_each_other_shifted_by_the_grace() -> None:
    s = Schedule("stmt", "statement.sent", Cron.parse("0 6 1 * *"), grace_ms=7_200_000)
    due = ms("2026-11-01T06:00:00+00:00")
    assert s.window_of(due) == (ms("2026-10-01T08:00:00+00:00"), ms("2026-11-01T08:00:00+00:00"))
    assert s.last_closed(ms("2026-11-01T07:59:00+00:00")) == ms("2026-10-01T06:00:00+00:00")
    assert s.last_closed(ms("2026-11-01T08:00:00+00:00")) == due


def test_the_journeys_file_carries_schedules() -> None:
    journeys = parse_journeys(
        BASE
        + """
schedules:
  monthly_statement:
    hop: statement.sent
    due: "0 6 1 * *"
    timezone: Europe/Berlin
    grace: 2h
    every_key: customer_id
    description: the monthly account statement
  nightly_settlement:
    hop: settlement.batch_done
    due: "@daily"
    at_least: 3
""",
        "shop.yaml",
    )
    stmt, nightly = journeys.schedules
    assert (stmt.name, stmt.hop, stmt.grace_ms, stmt.every_key, stmt.at_least) == (
        "monthly_statement",
        "statement.sent",
        7_200_000,
        "customer_id",
        0,
    )
    assert str(getattr(stmt.due.zone, "key", "")) == "Europe/Berlin"
    assert (nightly.at_least, nightly.every_key, nightly.grace_ms) == (3, None, 0)
    text = describe(journeys)
    assert "schedules: 2" in text
    assert "monthly_statement: statement.sent again for every customer_id seen in the period before" in text
    assert "nightly_settlement: at least 3 x settlement.batch_done; due '@daily' (UTC), grace 0s" in text


def test_a_file_without_schedules_has_none() -> None:
    assert parse_journeys(BASE).schedules == ()


def test_every_schedule_problem_is_named_by_file_schedule_and_field() -> None:
    with pytest.raises(JourneysError) as err:
        parse_journeys(
            BASE
            + """
schedules:
  a:
    hop: "bad hop"
    due: "0 6 1 *"
  b:
    due: "30 2 31 2 *"
    hop: x.y
    timezone: Mars/Olympus
    grace: soon
    at_least: 0
    when: always
  c: [1]
""",
            "shop.yaml",
        )
    text = "\n".join(err.value.problems)
    assert "shop.yaml: schedule 'a', field 'hop': 'bad hop' is not a hop name" in text
    assert "shop.yaml: schedule 'a', field 'due': '0 6 1 *' has 4 fields" in text
    assert "shop.yaml: schedule 'b', field 'due': '30 2 31 2 *' is never due (no such date)" in text
    assert "shop.yaml: schedule 'b', field 'timezone': 'Mars/Olympus' is not a known IANA zone" in text
    assert "shop.yaml: schedule 'b', field 'grace': 'soon' is not a duration" in text
    assert "shop.yaml: schedule 'b', field 'at_least': 0 must be a whole number from 1 to" in text
    assert "shop.yaml: schedule 'b': field 'when' is not known; allowed: hop, due" in text
    assert "shop.yaml: schedule 'c': must be a mapping" in text


def test_the_zone_default_is_utc() -> None:
    (s,) = parse_journeys(BASE + "schedules:\n  n: {hop: a.b, due: '0 0 * * *'}\n").schedules
    assert s.due.zone is UTC
