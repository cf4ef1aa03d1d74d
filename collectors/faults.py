"""Faults the shop simulator injects, their schedule, and the ledger of what was injected.

A fault acts on one hop of the simulated shop during a window relative to the run start. The
compact syntax (``ordertrail simulate --fault``, ``ordertrail demo``)::

    KIND[:HOP][:ARG...][@START[+LENGTH]]

    drop:HOP[:SHARE]                 that share of orders (default all) never send HOP nor any hop after it
    slow:HOP:FACTORx | slow:HOP:+D   the transit into HOP is FACTOR times longer, or D longer
    break[:HOP]                      the confirmation HOP (default: every confirmation hop) is never sent
    stop:HOP[:lose]                  HOP sends nothing in the window; what it held goes out when the
                                     window ends (``lose``: never), as a queue draining after an outage
    fail:HOP[:SHARE][:retry=D]       that share (default all) reports HOP with status error; with
                                     ``retry=D`` the hop succeeds D later, else the order stops there
    @START+LENGTH                    the window, as durations from the run start (30s, 2m); default
                                     from the start to the end of the run; ``@30s`` alone: from 30 s on

    SHARE is a number from 0 to 1 or a percentage (``0.3``, ``30%``).
    e.g. ``drop:payment.authorized:0.3@30s+60s``, ``slow:inventory.reserved:5x@1m``, ``break@0s+2m``

A fault is active for a hop when the hop would have happened inside the window (for ``slow``:
when the order entered the edge). Parse errors are ``FaultSpecError`` naming the spec and the bad
part.

The ``Ledger`` records every injected effect per order (order id, hop, fault, effect, when) and
each fault's window in epoch milliseconds, so injected faults can be compared with what the tracer
found (``compare``). It is safe to read from another thread while a real-time run writes it.

Imports only the standard library and the tracer's model and duration parsing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Final

from tracer.model import Finding, format_ts
from tracer.times import DURATION_HELP, format_duration, parse_duration

DROPPED: Final = "dropped"
DELAYED: Final = "delayed"
FAILED: Final = "failed"
SILENCED: Final = "silenced"
EFFECTS: Final = (DROPPED, DELAYED, FAILED, SILENCED)
SYNTAX: Final = "KIND[:HOP][:ARG...][@START[+LENGTH]] with KIND one of drop, slow, break, stop, fail"
_HOP: Final = re.compile(r"[a-z0-9_.-]{1,64}")
_SHARE_HELP: Final = "a number from 0 to 1 or a percentage like 30%"


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed or does not fit the shop; names the spec and the bad part."""

    def __init__(self, spec: str, problem: str) -> None:
        self.spec = spec
        self.problem = problem
        super().__init__(f"fault {spec!r}: {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """What every fault has: the hop it acts on and its window (ms from the run start)."""

    kind: ClassVar[str] = ""
    hop: str
    start_ms: int = 0
    duration_ms: int | None = None  # None: until the end of the run

    def active(self, rel_ms: float) -> bool:
        """Whether the fault acts at ``rel_ms`` after the run start."""
        if rel_ms < self.start_ms:
            return False
        return self.duration_ms is None or rel_ms < self.start_ms + self.duration_ms

    def end_ms(self) -> int | None:
        return None if self.duration_ms is None else self.start_ms + self.duration_ms

    def args(self) -> list[str]:
        return []

    def spec(self) -> str:
        """The compact syntax that parses back into this fault."""
        head = ":".join([self.kind, *([self.hop] if self.hop else []), *self.args()])
        window = f"@{format_duration(self.start_ms)}"
        if self.duration_ms is not None:
            window += f"+{format_duration(self.duration_ms)}"
        return head + window


@dataclass(frozen=True, slots=True, kw_only=True)
class DropAtEdge(Fault):
    """That share of orders never send ``hop`` nor any hop after it."""

    kind: ClassVar[str] = "drop"
    share: float = 1.0

    def args(self) -> list[str]:
        return [f"{self.share:g}"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SlowEdge(Fault):
    """The transit into ``hop`` takes ``factor`` times longer plus ``extra_ms``."""

    kind: ClassVar[str] = "slow"
    factor: float = 1.0
    extra_ms: int = 0

    def args(self) -> list[str]:
        out = [f"{self.factor:g}x"] if self.factor != 1.0 else []
        return out + ([f"+{format_duration(self.extra_ms)}"] if self.extra_ms else [])


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakConfirmations(Fault):
    """The confirmation ``hop`` is never sent; ``hop=""`` breaks every confirmation hop."""

    kind: ClassVar[str] = "break"


@dataclass(frozen=True, slots=True, kw_only=True)
class StopHop(Fault):
    """``hop`` sends nothing in the window; held hops go out when it ends unless ``lose``."""

    kind: ClassVar[str] = "stop"
    lose: bool = False

    def args(self) -> list[str]:
        return ["lose"] if self.lose else []


@dataclass(frozen=True, slots=True, kw_only=True)
class FailHop(Fault):
    """That share of orders report ``hop`` with status error; ``retry_ms`` later it succeeds."""

    kind: ClassVar[str] = "fail"
    share: float = 1.0
    retry_ms: int | None = None  # None: no retry, the order stops at the failed hop

    def args(self) -> list[str]:
        out = [f"{self.share:g}"]
        return out + ([f"retry={format_duration(self.retry_ms)}"] if self.retry_ms is not None else [])


KINDS: Final[dict[str, type[Fault]]] = {k.kind: k for k in (DropAtEdge, SlowEdge, BreakConfirmations, StopHop, FailHop)}


def parse_fault(spec: str) -> Fault:
    """One fault from the compact syntax (see the module docstring). Raises FaultSpecError."""
    head, at, window = spec.strip().partition("@")
    start_ms, duration_ms = _window(spec, window) if at else (0, None)
    kind, *parts = head.split(":")
    cls = KINDS.get(kind)
    if cls is None:
        raise FaultSpecError(spec, f"kind {kind!r} is not known; use one of {', '.join(KINDS)} ({SYNTAX})")
    hop = ""
    named = bool(parts) and not (cls is StopHop and parts[0] == "lose")
    if named and _HOP.fullmatch(parts[0]):
        hop = parts.pop(0)
    elif named:
        raise FaultSpecError(spec, f"hop {parts[0]!r} is not a hop name like payment.authorized; {_usage(kind)}")
    elif cls is not BreakConfirmations:
        raise FaultSpecError(spec, f"{kind} needs a hop, like {kind}:payment.authorized; {_usage(kind)}")
    fault = _PARSE_ARGS[kind](spec, hop, parts)
    if parts:
        raise FaultSpecError(spec, f"{':'.join(parts)!r} is not understood after {kind}:{hop}; {_usage(kind)}")
    return replace(fault, start_ms=start_ms, duration_ms=duration_ms)


def _drop(spec: str, hop: str, parts: list[str]) -> Fault:
    return DropAtEdge(hop=hop, share=_share(spec, parts.pop(0)) if parts else 1.0)


def _slow(spec: str, hop: str, parts: list[str]) -> Fault:
    if not parts:
        raise FaultSpecError(spec, f"slow needs a factor like 5x or an extra time like +8s; {_usage('slow')}")
    arg = parts.pop(0)
    if arg.startswith("+"):
        return SlowEdge(hop=hop, extra_ms=_duration(spec, arg[1:], "extra time"))
    try:
        factor = float(arg.removesuffix("x"))
    except ValueError:
        factor = 0.0
    if not 0.0 < factor < float("inf"):
        raise FaultSpecError(spec, f"slow factor {arg!r} must be a positive number like 5x, or an extra time like +8s")
    return SlowEdge(hop=hop, factor=factor)


def _break(spec: str, hop: str, parts: list[str]) -> Fault:
    return BreakConfirmations(hop=hop)


def _stop(spec: str, hop: str, parts: list[str]) -> Fault:
    lose = bool(parts) and parts[0] == "lose"
    if lose:
        parts.pop(0)
    return StopHop(hop=hop, lose=lose)


def _fail(spec: str, hop: str, parts: list[str]) -> Fault:
    retry_ms = None
    if parts and parts[-1].startswith("retry="):
        retry_ms = _duration(spec, parts.pop()[6:], "retry")
    share = _share(spec, parts.pop(0)) if parts else 1.0
    return FailHop(hop=hop, share=share, retry_ms=retry_ms)


# Each takes the arguments it understands off the front of ``parts``; what is left is an error.
_PARSE_ARGS: Final[dict[str, Callable[[str, str, list[str]], Fault]]] = {
    "drop": _drop,
    "slow": _slow,
    "break": _break,
    "stop": _stop,
    "fail": _fail,
}


def parse_schedule(specs: Iterable[str]) -> tuple[Fault, ...]:
    """Every fault of a schedule, in order. Raises FaultSpecError at the first bad spec."""
    return tuple(parse_fault(s) for s in specs)


def _usage(kind: str) -> str:
    return {
        "drop": "drop:HOP[:SHARE]",
        "slow": "slow:HOP:FACTORx or slow:HOP:+DURATION",
        "break": "break[:HOP]",
        "stop": "stop:HOP[:lose]",
        "fail": "fail:HOP[:SHARE][:retry=DURATION]",
    }[kind] + " then an optional @START+LENGTH"


def _window(spec: str, text: str) -> tuple[int, int | None]:
    start, plus, length = text.partition("+")
    start_ms = _duration(spec, start, "start") if start else 0
    duration_ms = _duration(spec, length, "length") if plus else None
    if duration_ms == 0:
        raise FaultSpecError(spec, f"length {length!r} must be longer than 0")
    return start_ms, duration_ms


def _duration(spec: str, text: str, what: str) -> int:
    try:
        return parse_duration(text)
    except ValueError:
        raise FaultSpecError(spec, f"{what} {text!r} is not {DURATION_HELP}") from None


def _share(spec: str, text: str) -> float:
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise FaultSpecError(spec, f"share {text!r} is not {_SHARE_HELP}") from None
    if not 0.0 <= share <= 1.0:
        raise FaultSpecError(spec, f"share {text!r} must be {_SHARE_HELP}")
    return share


# -- the ledger ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Effect:
    """One injected effect on one order. ``at_ms`` is when the hop would have happened; ``until_ms``
    when it did happen after all (delayed, silenced then released, failed then retried), else None."""

    order_id: str
    journey: str
    hop: str
    fault: int  # index in the schedule
    kind: str
    effect: str  # dropped | delayed | failed | silenced
    at_ms: int
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """One fault of the schedule with its window in epoch milliseconds (``end_ms`` None: open)."""

    index: int
    fault: Fault
    start_ms: int
    end_ms: int | None


class Ledger:
    """What a run injected: one ``Window`` per fault and every ``Effect``, in the order injected."""

    def __init__(self, schedule: Sequence[Fault]) -> None:
        self.schedule = tuple(schedule)
        self.started_ms: int | None = None
        self._windows: list[Window] = []
        self._effects: list[Effect] = []
        self._lock = threading.Lock()

    def begin(self, start_ms: int) -> None:
        """Fix the run start: the fault windows become absolute times."""
        with self._lock:
            self.started_ms = start_ms
            self._windows = [
                Window(i, f, start_ms + f.start_ms, None if (end := f.end_ms()) is None else start_ms + end)
                for i, f in enumerate(self.schedule)
            ]
            self._effects = []

    def record(self, effect: Effect) -> None:
        with self._lock:
            self._effects.append(effect)

    def windows(self) -> list[Window]:
        with self._lock:
            return list(self._windows)

    def effects(self, *, fault: int | None = None, effect: str | None = None) -> list[Effect]:
        with self._lock:
            found = list(self._effects)
        return [e for e in found if (fault is None or e.fault == fault) and (effect is None or e.effect == effect)]

    def to_wire(self) -> dict[str, object]:
        """The ledger as JSON: every fault's window, then every effect (times RFC 3339)."""
        return {
            "started": None if self.started_ms is None else format_ts(self.started_ms),
            "faults": [
                {
                    "index": w.index,
                    "fault": w.fault.spec(),
                    "kind": w.fault.kind,
                    "hop": w.fault.hop,
                    "start": format_ts(w.start_ms),
                    "end": None if w.end_ms is None else format_ts(w.end_ms),
                }
                for w in self.windows()
            ],
            "effects": [
                {
                    "order_id": e.order_id,
                    "journey": e.journey,
                    "hop": e.hop,
                    "fault": e.fault,
                    "kind": e.kind,
                    "effect": e.effect,
                    "at": format_ts(e.at_ms),
                    "until": None if e.until_ms is None else format_ts(e.until_ms),
                }
                for e in self.effects()
            ],
        }

    def summary(self) -> list[str]:
        """One line per fault: its spec, window and how many orders it touched, by effect."""
        lines = []
        effects = self.effects()
        for w in self.windows():
            counts: dict[str, int] = {}
            for e in effects:
                if e.fault == w.index:
                    counts[e.effect] = counts.get(e.effect, 0) + 1
            touched = ", ".join(f"{n} {name}" for name, n in counts.items()) or "no orders touched"
            end = format_ts(w.end_ms) if w.end_ms is not None else "end of run"
            lines.append(f"{w.fault.spec()}: {format_ts(w.start_ms)} → {end}: {touched}")
        return lines


@dataclass(slots=True)
class FaultReport:
    """Injected versus detected for one fault. Delays are from the effect to the finding."""

    window: Window
    injected: int = 0  # orders with an effect of this fault
    detected: int = 0  # of those, orders with a finding at the affected hop
    missed: list[str] = field(default_factory=list)  # order ids injected but not found
    first_effect_ms: int | None = None
    first_detected_ms: int | None = None
    delays_ms: list[int] = field(default_factory=list)  # detected_at - at_ms, per detected order

    @property
    def detection_delay_ms(self) -> int | None:
        """From the first injected effect to the first finding it caused."""
        if self.first_effect_ms is None or self.first_detected_ms is None:
            return None
        return self.first_detected_ms - self.first_effect_ms


@dataclass(slots=True)
class Comparison:
    reports: list[FaultReport]
    unexplained: list[Finding]  # findings at a hop and order no injected effect touched


def compare(ledger: Ledger, findings: Iterable[Finding]) -> Comparison:
    """Match findings to injected effects by (order id, hop). Any finding kind counts as detection;
    the earliest ``detected_at`` of an (order, hop) is its detection time."""
    first: dict[tuple[str, str], Finding] = {}
    for f in findings:
        key = (f.order_id, f.hop)
        seen = first.get(key)
        if seen is None or f.detected_at < seen.detected_at:
            first[key] = f
    reports = [FaultReport(w) for w in ledger.windows()]
    explained: set[tuple[str, str]] = set()
    counted: set[tuple[int, str]] = set()
    for e in ledger.effects():
        report = reports[e.fault]
        key = (e.order_id, e.hop)
        explained.add(key)
        if (e.fault, e.order_id) in counted:
            continue
        counted.add((e.fault, e.order_id))
        report.injected += 1
        if report.first_effect_ms is None or e.at_ms < report.first_effect_ms:
            report.first_effect_ms = e.at_ms
        found = first.get(key)
        if found is None:
            report.missed.append(e.order_id)
            continue
        report.detected += 1
        report.delays_ms.append(found.detected_at - e.at_ms)
        if report.first_detected_ms is None or found.detected_at < report.first_detected_ms:
            report.first_detected_ms = found.detected_at
    unexplained = [f for key, f in first.items() if key not in explained]
    return Comparison(reports, unexplained)


__all__ = [
    "DELAYED",
    "DROPPED",
    "EFFECTS",
    "FAILED",
    "KINDS",
    "SILENCED",
    "SYNTAX",
    "BreakConfirmations",
    "Comparison",
    "DropAtEdge",
    "Effect",
    "FailHop",
    "Fault",
    "FaultReport",
    "FaultSpecError",
    "Ledger",
    "SlowEdge",
    "StopHop",
    "Window",
    "compare",
    "parse_fault",
    "parse_schedule",
]
