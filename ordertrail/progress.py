"""A one-line progress bar on a terminal: how far, how fast, how long still.

``Progress.on(stream, label, total, unit)`` draws only when ``stream`` is a terminal (and the caller
did not ask for quiet), so redirected stderr and CI logs never see carriage returns. ``update`` is
cheap enough to call once per chunk of work and redraws at most every ``interval_s`` (5 times a
second by default); ``close`` erases the line so what follows starts clean.

The clock is injected (``time.monotonic`` by default). Imports only the standard library.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TextIO

BYTES: Final = "bytes"
EVENTS: Final = "events"
_BAR_WIDTH: Final = 24


class Progress:
    """Progress of one phase: ``done`` of ``total`` (``None`` when unknown), and a count of events."""

    __slots__ = ("_clock", "_drawn", "_interval", "_last", "_started", "_stream", "enabled", "label", "total", "unit")

    def __init__(
        self,
        stream: TextIO,
        label: str,
        total: int | None = None,
        unit: str = EVENTS,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 0.2,
    ) -> None:
        self.enabled = enabled
        self.label = label
        self.total = total if total else None
        self.unit = unit
        self._stream = stream
        self._clock = clock
        self._interval = interval_s
        self._started = clock()
        self._last = self._started
        self._drawn = False

    @classmethod
    def on(
        cls, stream: TextIO, label: str, total: int | None = None, unit: str = EVENTS, *, quiet: bool = False
    ) -> Progress:
        """A bar drawn on ``stream`` only when it is a terminal and ``quiet`` is false."""
        isatty = getattr(stream, "isatty", None)
        enabled = not quiet and callable(isatty) and bool(isatty())
        return cls(stream, label, total, unit, enabled=enabled)

    def update(self, done: int, events: int) -> None:
        """``done`` units of ``total`` so far, ``events`` events so far (for the rate)."""
        if not self.enabled:
            return
        now = self._clock()
        if now - self._last < self._interval:
            return
        self._last = now
        self._stream.write("\r" + self.render(done, events, now - self._started) + "\x1b[K")
        self._stream.flush()
        self._drawn = True

    def render(self, done: int, events: int, elapsed_s: float) -> str:
        """The text of the bar, e.g. ``reading  42% [#####....]  113.2/268.0 MB  512k events/s  ETA 0:12``."""
        rate = events / elapsed_s if elapsed_s > 0 else 0.0
        parts = [f"{self.label:<9}"]
        if self.total:
            share = min(done / self.total, 1.0)
            filled = int(share * _BAR_WIDTH)
            parts.append(f"{share * 100:3.0f}% [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}]")
            parts.append(f"{_amount(done, self.unit, bare=True)}/{_amount(self.total, self.unit)}")
        else:
            parts.append(_amount(done, self.unit))
        parts.append(f"{_count(rate)} events/s")
        if self.total and done and elapsed_s > 0:
            left = (self.total - done) * elapsed_s / done
            parts.append(f"ETA {_clock_time(left)}")
        return "  ".join(parts)

    def close(self) -> None:
        """Erase the bar, if one was drawn."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False


def _amount(n: int, unit: str, *, bare: bool = False) -> str:
    if unit == BYTES:
        text = f"{n / 1e6:.1f}"
        return text if bare else text + " MB"
    return _count(n) if bare else f"{_count(n)} {unit}"


def _count(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k"
    return f"{n:.0f}"


def _clock_time(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
