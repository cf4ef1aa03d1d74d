"""Parsing the two time notations of the contract: durations (``250ms``, ``30s``, ``1h30m``) and
instants (RFC 3339, or epoch milliseconds as a number). Both return integer milliseconds.

Errors are ``ValueError`` with a message that says what is allowed; callers add the field name.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION: Final = re.compile(r"(\d+)(ms|s|m|h|d)")
DURATION_HELP: Final = "a duration like 250ms, 30s, 5m, 2h, 1d (or combined, largest unit first: 1h30m)"

# Epoch milliseconds before 2000-01-01 are almost always seconds or a zero by mistake.
MIN_TS_MS: Final = 946_684_800_000
# 2100-01-01: anything later is a unit mistake (microseconds) rather than a real time.
MAX_TS_MS: Final = 4_102_444_800_000
TS_HELP: Final = "RFC 3339 with a time zone (2026-11-22T10:02:03.123Z) or epoch milliseconds"


def parse_duration(text: object) -> int:
    """``"1h30m"`` -> 5_400_000. Raises ValueError naming the accepted forms."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not {DURATION_HELP}")
    pos = 0
    total = 0
    smallest = 86_400_001  # units must go from large to small, each at most once (no "30s5m")
    for match in _DURATION.finditer(text):
        size = _UNIT_MS[match.group(2)]
        if match.start() != pos or size >= smallest:
            pos = -1
            break
        smallest = size
        total += int(match.group(1)) * size
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{text!r} is not {DURATION_HELP}")
    return total


def format_duration(ms: int) -> str:
    """The shortest contract spelling of a duration: 90_000 -> ``1m30s``."""
    if ms == 0:
        return "0s"
    parts = []
    rest = ms
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    if rest:
        parts.append(f"{rest}ms")
    return "".join(parts)


def parse_ts(value: object) -> int:
    """An instant as epoch milliseconds. Raises ValueError saying what was wrong."""
    if type(value) is str and len(value) == 24 and value[19] == "." and value[23] in "Zz" and value[16] == ":":
        # The wire form (2026-11-22T10:02:03.123Z), from a memo of whole minutes: the hot path.
        base = _MINUTES.get(value[:16])
        if base is None:
            base = _minute_ms(value[:16])
        # The seconds and milliseconds digit by digit (ASCII only; a character that is not
        # one sends the value to the careful path): compiled, no slice and no lookup.
        s1 = ord(value[17]) - 48
        s2 = ord(value[18]) - 48
        m1 = ord(value[20]) - 48
        m2 = ord(value[21]) - 48
        m3 = ord(value[22]) - 48
        if (
            base >= 0
            and 0 <= s1 <= 5 and 0 <= s2 <= 9
            and 0 <= m1 <= 9 and 0 <= m2 <= 9 and 0 <= m3 <= 9
        ):  # fmt: skip
            return base + (s1 * 10 + s2) * 1000 + m1 * 100 + m2 * 10 + m3
    if type(value) is int and MIN_TS_MS <= value < MAX_TS_MS:
        return value
    return _parse_careful(value)


def _parse_careful(value: object) -> int:
    """``parse_ts`` for every form, checking each rule."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {TS_HELP}")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} is not {TS_HELP}")
        ms = int(value)
        if ms < MIN_TS_MS:
            hint = " (it looks like seconds; give milliseconds)" if ms >= MIN_TS_MS // 1000 else ""
            raise ValueError(f"{value!r} is before 2000-01-01{hint}; ts takes {TS_HELP}")
        if ms >= MAX_TS_MS:
            raise ValueError(f"{value!r} is after 2100-01-01 (microseconds?); ts takes {TS_HELP}")
        return ms
    if isinstance(value, str):
        zone = _zone(value)
        if zone is None:
            raise ValueError(f"{value[:64]!r} is not {TS_HELP}")
        if not zone:
            raise ValueError(f"{value[:64]!r} has no time zone; add Z for UTC ({TS_HELP})")
        try:
            dt = datetime.fromisoformat(value if value[-1] != "z" else value[:-1] + "Z")
        except ValueError:
            raise ValueError(f"{value[:64]!r} is not {TS_HELP}") from None
        ms = (int(dt.timestamp()) * 1000) + dt.microsecond // 1000
        if not MIN_TS_MS <= ms < MAX_TS_MS:
            raise ValueError(f"{value[:64]!r} is outside 2000–2100; ts takes {TS_HELP}")
        return ms
    raise ValueError(f"{_short(value)} is not {TS_HELP}")


_MINUTES: Final[dict[str, int]] = {}  # "2026-11-22T10:02" -> epoch ms, -1 when not a valid one
_MINUTES_MAX: Final = 1 << 14


def _minute_ms(prefix: str) -> int:
    """``"2026-11-22T10:02"`` as epoch milliseconds (in 2000–2100), remembered; -1 when the
    careful path must look at it. Exactly what ``parse_ts`` gives for ``prefix + ":00.000Z"``,
    and (2000 and 2100 being whole minutes) ``prefix + ":SS.fffZ"`` is that plus the seconds."""
    try:
        base = _parse_careful(prefix + ":00.000Z")
    except ValueError:
        base = -1
    if len(_MINUTES) >= _MINUTES_MAX:
        _MINUTES.clear()  # bounded: an input of scattered times costs a re-parse, not memory
    _MINUTES[prefix] = base
    return base


def _zone(text: str) -> str | None:
    """The zone of an RFC 3339 date-time (``""`` when it has none), None when ``text`` does not
    have its shape. Character checks, not a regex: this runs for every event, and
    ``datetime.fromisoformat`` checks the digits but also accepts ISO forms RFC 3339 does not
    (week dates, ``20261122T1002``, ``+0200``, hours without minutes)."""
    n = len(text)
    if (
        n < 19
        or text[4] != "-"
        or text[7] != "-"
        or text[10] not in "Tt "
        or text[13] != ":"
        or text[16] != ":"
        or (n > 19 and text[19] not in ".Zz+-")
        or (n > 20 and text[19] == "." and not text[20].isdigit())
    ):
        return None
    last = text[-1]
    if last == "Z" or last == "z":
        return last
    if n >= 25 and text[-3] == ":" and text[-6] in "+-":
        return text[-6:]
    if "+" in text[19:] or "-" in text[19:]:
        return None
    return ""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."
