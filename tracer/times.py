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
DURATION_HELP: Final = "a duration like 250ms, 30s, 5m, 2h, 1d (or combined, 1h30m)"

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
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_MS[match.group(2)]
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
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value[:64]!r} is not {TS_HELP}") from None
        if dt.tzinfo is None:
            raise ValueError(f"{value[:64]!r} has no time zone; add Z for UTC ({TS_HELP})")
        ms = (int(dt.timestamp()) * 1000) + dt.microsecond // 1000
        if not MIN_TS_MS <= ms < MAX_TS_MS:
            raise ValueError(f"{value[:64]!r} is outside 2000–2100; ts takes {TS_HELP}")
        return ms
    raise ValueError(f"{_short(value)} is not {TS_HELP}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."
