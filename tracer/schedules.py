"""Scheduled expectations: transactions that must happen with no event to trigger them (monthly
statements, scheduled payments, nightly batches). The ``schedules:`` section of the journeys file::

    schedules:
      monthly_statement:
        hop: statement.sent        # the hop that proves it happened
        due: "0 6 1 * *"           # cron: minute hour day-of-month month day-of-week
        timezone: Europe/Berlin    # the zone the cron is read in (default UTC)
        grace: 2h                  # how late it may still come (default 0s)
        every_key: customer_id     # per-key recurrence: every key seen last period is due again
      nightly_settlement:
        hop: settlement.batch_done
        due: "@daily"
        at_least: 1                # volume: at least N events of the hop by the due time

Each due instant ``D`` closes a window ``(previous D + grace, D + grace]``; windows follow each
other without gap or overlap, so every event counts in exactly one. When the clock passes the end
of a window, the window is judged: at least ``at_least`` distinct events of the hop (default 1),
and with ``every_key``, every key that had the hop in the window before has it again.

This module parses and computes time; ``detectors.schedules`` judges windows against the store.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tracer.errors import unknown_keys
from tracer.events import HOP_RE, HOP_RULE
from tracer.times import DURATION_HELP, parse_duration

SCHEDULE_KEYS: Final = ("hop", "due", "timezone", "grace", "every_key", "at_least", "description")
KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_GRACE_MS: Final = 31 * 86_400_000
MAX_AT_LEAST: Final = 100_000_000
CRON_HELP: Final = (
    "a cron expression of five fields (minute hour day-of-month month day-of-week; each '*', a "
    "number, a range a-b, a step */n or a-b/n, or a comma list) or one of @hourly, @daily, "
    "@weekly, @monthly, @yearly"
)
_MACROS: Final = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELDS: Final = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))
_NAMES: Final = {
    **{m.lower(): i for i, m in enumerate(calendar.month_abbr) if m},
    **{d.lower(): (i + 1) % 7 for i, d in enumerate(calendar.day_abbr)},
}
_SEARCH_DAYS: Final = 5 * 366 + 1  # "0 0 29 2 *" is due once in four years; "30 2 31 2 *" never


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed five-field cron expression, read in ``zone``. Day-of-month and day-of-week follow
    Vixie cron: when both are restricted, a day matching either is due."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool
    zone: tzinfo = UTC

    @staticmethod
    def parse(text: str, zone: tzinfo = UTC) -> Cron:
        """Raises ValueError saying which field is wrong and what is allowed."""
        spec = _MACROS.get(text.strip().lower(), text)
        parts = spec.split()
        if len(parts) != 5:
            raise ValueError(f"{text!r} has {len(parts)} fields; it must be {CRON_HELP}")
        sets = [_cron_field(part, name, lo, hi) for part, (name, lo, hi) in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return Cron(text, sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*", zone)

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, ms: int) -> int | None:
        """The first due instant strictly after ``ms`` (epoch ms), or None if there is none within
        five years (a date that never exists, like 31 February)."""
        start = datetime.fromtimestamp(ms / 1000, self.zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        for _ in range(_SEARCH_DAYS):
            if self._day_matches(day):
                for h in hours:
                    for m in minutes:
                        local = day.replace(hour=h, minute=m)
                        if local < start:
                            continue
                        at = _instant_ms(local)
                        if at > ms:
                            return at
            day = (day + timedelta(days=1)).replace(hour=0, minute=0)
        return None

    def last_at_or_before(self, ms: int) -> int | None:
        """The latest due instant at or before ``ms``, or None within five years."""
        end = datetime.fromtimestamp(ms / 1000, self.zone).replace(second=0, microsecond=0)
        day = end.replace(hour=0, minute=0)
        hours = sorted(self.hours, reverse=True)
        minutes = sorted(self.minutes, reverse=True)
        for _ in range(_SEARCH_DAYS):
            if self._day_matches(day):
                for h in hours:
                    for m in minutes:
                        local = day.replace(hour=h, minute=m)
                        if local > end:
                            continue
                        at = _instant_ms(local)
                        if at <= ms:
                            return at
            day = (day - timedelta(days=1)).replace(hour=0, minute=0)
        return None


def _instant_ms(local: datetime) -> int:
    # A wall time skipped by a DST change (02:30 on the spring-forward night) maps forward, as
    # zoneinfo does with fold=0; a repeated one (autumn) is due at its first occurrence.
    return int(local.astimezone(UTC).timestamp() * 1000)


def _cron_field(part: str, name: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for item in part.split(","):
        body, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name} {item!r}: the step after '/' must be a whole number above 0")
            step = int(step_text)
        if body == "*":
            first, last = lo, hi
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _cron_value(a, name, lo, hi), _cron_value(b, name, lo, hi)
            if first > last:
                raise ValueError(f"{name} {item!r}: a range must go from low to high")
        else:
            first = _cron_value(body, name, lo, hi)
            last = hi if step_text else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _cron_value(text: str, name: str, lo: int, hi: int) -> int:
    value = _NAMES.get(text.lower()) if name in ("month", "day-of-week") else None
    if value is None:
        if not text.isdigit():
            raise ValueError(f"{name} {text!r} is not a number from {lo} to {hi}")
        value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"{name} {text!r} is not a number from {lo} to {hi}")
    return value


@dataclass(frozen=True, slots=True)
class Schedule:
    """One scheduled expectation (see the module docstring)."""

    name: str
    hop: str
    due: Cron
    grace_ms: int = 0
    every_key: str | None = None
    at_least: int = 1  # 0 with every_key unless given
    description: str = ""

    def window_of(self, due_ms: int) -> tuple[int, int] | None:
        """The event-time window ``(start, end]`` that the due instant ``due_ms`` closes."""
        before = self.due.last_at_or_before(due_ms - 1)
        if before is None:
            return None
        return before + self.grace_ms, due_ms + self.grace_ms

    def last_closed(self, now_ms: int) -> int | None:
        """The latest due instant whose window has closed by ``now_ms``."""
        return self.due.last_at_or_before(now_ms - self.grace_ms)


def parse_schedules(spec: object, source: str, problems: list[str]) -> tuple[Schedule, ...]:
    """The ``schedules:`` mapping; problems are appended, located by file, schedule and field."""
    if spec is None:
        return ()
    if not isinstance(spec, dict):
        problems.append(f"{source}: schedules: must be a mapping of name -> {{hop, due, ...}}")
        return ()
    out: list[Schedule] = []
    for name, body in spec.items():
        schedule = _schedule(str(name), body, f"{source}: schedule {str(name)!r}", problems)
        if schedule is not None:
            out.append(schedule)
    return tuple(out)


def _schedule(name: str, spec: object, at: str, problems: list[str]) -> Schedule | None:
    from tracer.journeys import JOURNEY_NAME_RE  # the same rule for every name in the file

    if JOURNEY_NAME_RE.fullmatch(name) is None:
        problems.append(f"{at}: the name must match [A-Za-z0-9_.-]{{1,64}}")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{at}: must be a mapping like {{hop: statement.sent, due: '0 6 1 * *'}}")
        return None
    before = len(problems)
    problems += unknown_keys(at, spec, SCHEDULE_KEYS)
    hop = spec.get("hop")
    if hop is None:
        problems.append(f"{at}, field 'hop': is required (the hop that proves the transaction happened)")
    elif not isinstance(hop, str) or HOP_RE.fullmatch(hop) is None:
        problems.append(f"{at}, field 'hop': {hop!r} is not a hop name; it {HOP_RULE}")
    zone: tzinfo = UTC
    zone_name = spec.get("timezone", "UTC")
    if not isinstance(zone_name, str):
        problems.append(f"{at}, field 'timezone': {zone_name!r} must be an IANA zone name like Europe/Berlin")
    elif zone_name != "UTC":
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"{at}, field 'timezone': {zone_name!r} is not a known IANA zone like Europe/Berlin")
    cron: Cron | None = None
    due = spec.get("due")
    if due is None:
        problems.append(f"{at}, field 'due': is required ({CRON_HELP})")
    elif not isinstance(due, str):
        problems.append(f"{at}, field 'due': {due!r} must be {CRON_HELP}")
    else:
        try:
            cron = Cron.parse(due, zone)
        except ValueError as exc:
            problems.append(f"{at}, field 'due': {exc}")
        else:
            if cron.next_after(0) is None:
                problems.append(f"{at}, field 'due': {due!r} is never due (no such date)")
    grace = 0
    if "grace" in spec:
        try:
            grace = parse_duration(spec["grace"])
        except ValueError:
            problems.append(f"{at}, field 'grace': {spec['grace']!r} is not {DURATION_HELP}")
        else:
            if grace > MAX_GRACE_MS:
                problems.append(f"{at}, field 'grace': {spec['grace']!r} is longer than the longest allowed, 31d")
    every_key = spec.get("every_key")
    if every_key is not None and (not isinstance(every_key, str) or KEY_RE.fullmatch(every_key) is None):
        problems.append(
            f"{at}, field 'every_key': {every_key!r} must be order_id, customer_id, service or an attribute name"
        )
    # Volume: at least one event by default; with every_key the keys say what is due, and a
    # period nobody had the hop in expects nothing the next (at_least 0 unless given).
    lowest = 1 if every_key is None else 0
    at_least = spec.get("at_least", lowest)
    if isinstance(at_least, bool) or not isinstance(at_least, int) or not lowest <= at_least <= MAX_AT_LEAST:
        problems.append(f"{at}, field 'at_least': {at_least!r} must be a whole number from {lowest} to {MAX_AT_LEAST}")
    description = spec.get("description", "")
    if not isinstance(description, str):
        problems.append(f"{at}, field 'description': {description!r} must be text")
    if len(problems) > before or cron is None:
        return None
    return Schedule(name, str(hop), cron, grace, every_key, int(at_least), str(description))
