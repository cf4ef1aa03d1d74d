"""Judging scheduled expectations (``tracer.schedules``) against the store.

A schedule's windows are judged when the clock passes their end. The clock is the tracer's
(``tracer.clock``): it follows event time and moves with the wall only while the pipeline is
caught up, so a backlog never makes a statement look missed. The judgement is a query against
the store, not state kept here: it survives restarts, works the same with several tracer
instances, and counts late-arriving events as soon as they are stored.

Lifecycle of a window's result:

* ``ok`` — enough events (``at_least``) and, with ``every_key``, every key of the window before
  came again.
* ``missed`` — judged short. It is judged again on every ``check`` while open, so events that
  arrive late resolve it (``resolved``, the record corrects itself), and it is ``superseded``
  when a later window of the same schedule is judged ``ok`` (the job runs again; the old miss
  stays in the history). At most ``max_open`` misses per schedule stay open; older ones are
  superseded too.

On the first check the watch judges only each schedule's latest closed window (it does not
replay history); after that it judges every window that closed since, in order.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from tracer.model import format_ts
from tracer.schedules import Schedule
from tracer.times import format_duration

log = logging.getLogger("ordertrail.detectors.schedules")

Outcome = Literal["ok", "missed", "resolved", "superseded"]
_MAX_WINDOWS_PER_CHECK = 1000  # an hourly schedule after six weeks down; the rest next check


class HopQuery(Protocol):
    """What the watch asks the store (``tracer.clickhouse.Store`` and ``tracer.memstore.MemStore``)."""

    def hop_count(self, hop: str, start_ms: int, end_ms: int) -> int: ...

    def missing_keys(
        self, hop: str, key: str, before: tuple[int, int], window: tuple[int, int], sample: int = 10
    ) -> tuple[int, int, list[str]]: ...


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One judged window of one schedule."""

    schedule: str
    hop: str
    due_at: int  # the due instant (epoch ms); the window is (start, end] in event time
    start: int
    end: int
    outcome: Outcome
    seen: int  # distinct events of the hop in the window
    at_least: int
    key: str | None = None
    expected_keys: int = 0  # keys that had the hop in the window before
    missing_keys: int = 0  # of those, the ones without it in this window
    examples: tuple[str, ...] = ()  # a sample of the missing keys
    judged_at: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome != "missed"

    def explanation(self) -> str:
        """Plain words for the alert and the status page."""
        due = format_ts(self.due_at)
        if self.outcome == "ok":
            return f"{self.schedule}: {self.hop} happened as due by {due} ({self.seen} events)."
        parts = []
        if self.seen < self.at_least:
            parts.append(f"{self.seen} of at least {self.at_least} {self.hop} events")
        if self.missing_keys:
            shown = ", ".join(self.examples[:5])
            parts.append(
                f"{self.missing_keys} of {self.expected_keys} {self.key} values seen in the period before have "
                f"no {self.hop} yet (e.g. {shown})"
            )
        what = "; ".join(parts) or "nothing missing"
        grace = format_duration(self.end - self.due_at)
        verb = {"missed": "was due", "resolved": "arrived late for", "superseded": "was missed for"}[self.outcome]
        return f"{self.schedule}: {self.hop} {verb} {due} (grace {grace}): {what}."

    def to_wire(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "hop": self.hop,
            "due_at": format_ts(self.due_at),
            "window": {"start": format_ts(self.start), "end": format_ts(self.end)},
            "outcome": self.outcome,
            "seen": self.seen,
            "at_least": self.at_least,
            "every_key": self.key,
            "expected_keys": self.expected_keys,
            "missing_keys": self.missing_keys,
            "examples": list(self.examples),
            "judged_at": format_ts(self.judged_at),
            "explanation": self.explanation(),
        }


@dataclass(slots=True)
class _Track:
    schedule: Schedule
    judged_through: int | None = None  # the latest due instant judged
    open: list[WindowResult] = field(default_factory=list)
    history: deque[WindowResult] = field(default_factory=lambda: deque(maxlen=50))


class ScheduleWatch:
    """Judges the windows of every schedule as the clock passes them. ``check(now_ms)`` returns
    the results that changed (newly judged windows, misses resolved or superseded); thread-safe."""

    def __init__(self, schedules: Sequence[Schedule], store: HopQuery, *, max_open: int = 10, sample: int = 10):
        self._store = store
        self._tracks = {s.name: _Track(s) for s in schedules}
        self._max_open = max_open
        self._sample = sample
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._tracks)

    def check(self, now_ms: int) -> list[WindowResult]:
        changed: list[WindowResult] = []
        with self._lock:
            for track in self._tracks.values():
                changed.extend(self._recheck_open(track, now_ms))
                changed.extend(self._judge_closed(track, now_ms))
        return changed

    def open_misses(self) -> list[WindowResult]:
        with self._lock:
            return [r for t in self._tracks.values() for r in t.open]

    def status(self, now_ms: int) -> list[dict[str, Any]]:
        """Per schedule: its rule, the next due time, the open misses and the recent history."""
        out = []
        with self._lock:
            for t in self._tracks.values():
                s = t.schedule
                nxt = s.due.next_after(now_ms - s.grace_ms)
                out.append(
                    {
                        "schedule": s.name,
                        "hop": s.hop,
                        "due": s.due.text,
                        "timezone": str(getattr(s.due.zone, "key", "UTC")),
                        "grace": format_duration(s.grace_ms),
                        "at_least": s.at_least,
                        "every_key": s.every_key,
                        "description": s.description,
                        "next_due_at": format_ts(nxt) if nxt is not None else None,
                        "status": "missed" if t.open else ("ok" if t.history else "not judged yet"),
                        "open": [r.to_wire() for r in t.open],
                        "recent": [r.to_wire() for r in reversed(t.history)][:10],
                    }
                )
        return out

    # -- judging ----------------------------------------------------------------------------------

    def _judge_closed(self, t: _Track, now_ms: int) -> list[WindowResult]:
        s = t.schedule
        last = s.last_closed(now_ms)
        if last is None or (t.judged_through is not None and last <= t.judged_through):
            return []
        dues: list[int] = []
        if t.judged_through is None:
            dues.append(last)
        else:
            due = s.due.next_after(t.judged_through)
            while due is not None and due <= last and len(dues) < _MAX_WINDOWS_PER_CHECK:
                dues.append(due)
                due = s.due.next_after(due)
        out: list[WindowResult] = []
        for due in dues:
            result = self._judge(s, due, now_ms)
            t.judged_through = due
            if result is None:
                continue
            t.history.append(result)
            out.append(result)
            if result.outcome == "missed":
                t.open.append(result)
                log.warning("scheduled expectation missed: %s", result.explanation())
                while len(t.open) > self._max_open:
                    out.append(self._close(t, t.open[0], "superseded", now_ms))
            else:
                for old in list(t.open):
                    out.append(self._close(t, old, "superseded", now_ms))
        return out

    def _recheck_open(self, t: _Track, now_ms: int) -> list[WindowResult]:
        out = []
        for old in list(t.open):
            again = self._judge(t.schedule, old.due_at, now_ms)
            if again is not None and again.outcome == "ok":
                out.append(self._close(t, old, "resolved", now_ms, again))
                log.info("scheduled expectation met late: %s", out[-1].explanation())
        return out

    def _close(
        self, t: _Track, old: WindowResult, outcome: Outcome, now_ms: int, again: WindowResult | None = None
    ) -> WindowResult:
        t.open.remove(old)
        base = again if again is not None else old
        closed = replace(base, outcome=outcome, judged_at=now_ms)
        t.history.append(closed)
        return closed

    def _judge(self, s: Schedule, due: int, now_ms: int) -> WindowResult | None:
        window = s.window_of(due)
        if window is None:
            return None
        start, end = window
        seen = self._store.hop_count(s.hop, start, end)
        expected = missing = 0
        examples: list[str] = []
        if s.every_key is not None:
            before = s.window_of(start - s.grace_ms)
            if before is not None:
                expected, missing, examples = self._store.missing_keys(s.hop, s.every_key, before, window, self._sample)
        outcome: Outcome = "ok" if seen >= s.at_least and missing == 0 else "missed"
        return WindowResult(
            s.name, s.hop, due, start, end, outcome, seen, s.at_least, s.every_key, expected, missing,
            tuple(examples), now_ms,
        )  # fmt: skip
