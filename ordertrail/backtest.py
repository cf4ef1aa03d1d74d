"""``ordertrail backtest``: replay a file of hop events in event time and print the final findings.

Contract (CONTRACT §4): ``ordertrail backtest --journeys FILE EVENTS.ndjson [--until TIME]``.
EVENTS is NDJSON (``-`` for stdin, gzip when the name ends in ``.gz``). Each line is decoded on its
own; a rejected line is reported on stderr as ``line N: <reason>`` and the run goes on. Accepted
events are sorted once by (ts, order_id, hop, event_id) and fed to one ``Tracer``, whose clock is
moved to each event's time before the event and at the end to ``--until`` (default: the latest
event time; events after ``--until`` are not replayed, as if they had not happened yet).

stdout carries only the final version of every finding, one compact JSON object a line, sorted by
(due_at, order_id, hop, kind). Progress, rejected lines and the summary go to stderr.
Exit status: 0 when it ran (rejected lines included), 1 when the store failed during the run, 2
when the arguments, the journeys file, the events file or the store URL are unusable.

With ``--store URL`` the replayed events, findings and order snapshots are written in batches; the
store adapter is imported only then. Nothing else is written anywhere.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from itertools import compress, islice
from operator import attrgetter, eq
from typing import IO, Final, Protocol, TextIO, cast

import msgspec

from ordertrail.progress import BYTES, EVENTS, Progress
from tracer.engine import OrderSnapshot, Tracer, TracerStats
from tracer.errors import EventError, JourneysError, StoreError
from tracer.events import decode_line
from tracer.journeys import Journeys, load_journeys
from tracer.model import FINDING_KINDS, OPEN, RESOLVED, Finding, HopEvent
from tracer.processor import Sink, tuned_gc
from tracer.stitch import Stitcher
from tracer.storewriter import PreparingSink, StoreWriter
from tracer.times import DURATION_HELP, TS_HELP, parse_duration, parse_ts

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
BATCH: Final = 20_000  # events per store write
DEFAULT_RETENTION_MS: Final = 7 * 86_400_000  # as `ordertrail run`
STORE_SCHEMES: Final = ("chdb://", "http://", "https://")
_READ_BYTES: Final = 1 << 20  # lines are read about a megabyte at a time
_REPLAY_ORDER: Final = attrgetter("ts", "order_id", "hop", "event_id")
_TS: Final = attrgetter("ts")
_DIGITS: Final = re.compile(r"\d+")
_JSON: Final = msgspec.json.Encoder()


class Store(Protocol):
    """What the backtest needs of a store (tracer.clickhouse.Store, tracer.memstore.MemStore)."""

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None: ...
    def close(self) -> None: ...


StoreOpener = Callable[[str], Store]


def open_store(url: str) -> Store:
    """The ClickHouse store (chDB or a server) at ``url``; the adapter is imported only when asked."""
    from tracer.clickhouse import Store as ClickHouseStore  # imported only when a store is asked for

    return ClickHouseStore.open(url)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "events", metavar="EVENTS", help="NDJSON hop events, one a line; '-' for stdin; .gz is unzipped"
    )
    parser.add_argument("--journeys", required=True, metavar="FILE", help="the journeys file (YAML)")
    parser.add_argument(
        "--until",
        metavar="TIME",
        help=f"move the clock to this time at the end ({TS_HELP}); default: the latest event time. "
        "Events after it are not replayed",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="also write events, findings and order states to chdb:///DIR or http(s)://HOST:PORT (default: none)",
    )
    parser.add_argument(
        "--retention",
        metavar="DURATION",
        help=f"how long an idle open order is held ({DURATION_HELP}; default 7d, as in `ordertrail run`)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary on stderr")


@dataclass(slots=True)
class ReadResult:
    """The accepted events of an input, in input order, and what was counted on the way."""

    events: list[HopEvent]
    lines: int = 0  # non-blank lines
    rejected: int = 0


@dataclass(slots=True)
class Outcome:
    """The final findings of a replay and its counts."""

    findings: list[Finding]
    stats: TracerStats
    replayed: int = 0
    skipped: int = 0  # accepted events after --until
    orders: int = 0
    until: int | None = None
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)


def read_events(
    stream: IO[bytes],
    report: Callable[[int, str], None],
    progress: Progress | None = None,
    position: Callable[[], int] | None = None,
    *,
    lean: bool = False,
    stitcher: Stitcher | None = None,
) -> ReadResult:
    """Decode every line of ``stream``; ``report(line_number, reason)`` for each rejected one.

    Blank lines are skipped silently. Only the decoded events are kept; ``lean`` keeps only the
    fields the tracer reads (no attrs, span ids or service; hop and journey names shared), about
    a third of the memory, for a replay whose events are not stored. ``position()`` tells the
    progress bar how far into the input we are (bytes); without it the bytes read are counted.

    With a ``stitcher`` (journeys that declare other keys), events reported under another key of
    their order are re-keyed; those whose link comes later in the file wait for it, and those whose
    link never comes are reported as unlinked at the end, with their line number."""
    out = ReadResult([])
    events = out.events
    append = events.append
    decode = decode_line
    names: dict[str, str] = {}
    share = names.setdefault
    no_attrs: dict[str, str] = {}
    n = 0
    blank = 0
    read = 0
    while chunk := stream.readlines(_READ_BYTES):
        for line in chunk:
            n += 1
            try:
                ev = decode(line)
            except EventError as exc:
                if line.isspace() or not line:
                    blank += 1
                    continue
                out.rejected += 1
                report(n, str(exc))
                continue
            if stitcher is not None:
                moved = stitcher.stitch(ev, 0, n)
                if moved is None:
                    continue
                ev = moved
            if lean:
                h, j = ev.hop, ev.journey
                ev = HopEvent(
                    ev.order_id, share(h, h), ev.ts, ev.event_id, ev.trace_id, "", "", "", ev.status, share(j, j),
                    ev.customer_id, no_attrs,
                )  # fmt: skip
            append(ev)
        if progress is not None and progress.enabled:
            if position is None:
                read += sum(map(len, chunk))
            progress.update(position() if position is not None else read, len(events))
    if stitcher is not None:
        events.extend(stitcher.drain_released())
        for w in stitcher.drain_waiting():
            out.rejected += 1
            report(
                w.offset, f"unlinked: no event in the file linked {w.key} {w.value!r} to an order (hop {w.event.hop})"
            )
    out.lines = n - blank
    return out


def replay_order(events: list[HopEvent]) -> None:
    """Sort ``events`` in place by (ts, order_id, hop, event_id): the same order whatever the input order.

    Sorting by time alone is nearly linear on a mostly time-ordered input and needs no key tuples
    (a few hundred megabytes for millions of events); only runs of equal times are then sorted
    by the whole key."""
    events.sort(key=_TS)
    stamps = list(map(_TS, events))
    ties = compress(range(1, len(stamps)), map(eq, stamps, islice(stamps, 1, None)))  # i: ts[i-1] == ts[i]
    first = last = -2
    for i in ties:
        if i != last + 1:
            if first >= 0:
                events[first : last + 1] = sorted(events[first : last + 1], key=_REPLAY_ORDER)
            first = i - 1
        last = i
    if first >= 0:
        events[first : last + 1] = sorted(events[first : last + 1], key=_REPLAY_ORDER)


def replay(
    journeys: Journeys,
    events: list[HopEvent],
    *,
    until: int | None = None,
    store: Store | None = None,
    retention_ms: int = DEFAULT_RETENTION_MS,
    progress: Progress | None = None,
) -> Outcome:
    """Replay ``events`` (sorted here, in place) in event time; the final version of every finding.

    The clock is moved to each event's time before it is applied, and at the end to ``until``
    (default: the latest event time). With a store, what the tracer derived is written every
    ``BATCH`` events and once more at the end."""
    replay_order(events)
    end = len(events)
    if until is not None:
        end = bisect.bisect_right(events, until, key=_TS)
    elif events:
        until = events[-1].ts
    tracer = Tracer(journeys, track_snapshots=store is not None, retention_ms=retention_ms)
    advance = tracer.advance
    on_event = tracer.on_event
    final: dict[tuple[str, str, str], Finding] = {}

    def collect() -> list[Finding]:
        found = tracer.drain_findings()
        for f in found:
            final[f.order_id, f.hop, f.kind] = f
        return found

    clock = -1
    for start in range(0, end, BATCH):
        batch = events[start : min(start + BATCH, end)]
        for ev in batch:
            ts = ev.ts
            if ts != clock:
                advance(ts)
                clock = ts
            on_event(ev)
        found = collect()
        if store is not None:
            store.write(batch, found, tracer.drain_snapshots())
        if progress is not None:
            progress.update(start + len(batch), start + len(batch))
    if until is not None:
        advance(until)
    found = collect()
    if store is not None and found:
        store.write([], found, tracer.drain_snapshots())
    outcome = Outcome(
        sorted(final.values(), key=lambda f: (f.due_at, f.order_id, f.hop, f.kind)),
        tracer.stats,
        end,
        len(events) - end,
        len({ev.order_id for ev in islice(events, end)}),
        until,
    )
    for f in outcome.findings:
        counts = outcome.by_kind.setdefault(f.kind, {OPEN: 0, RESOLVED: 0})
        counts[f.status] = counts.get(f.status, 0) + 1
    return outcome


def write_findings(findings: Sequence[Finding], out: TextIO) -> None:
    """One compact JSON object a line (CONTRACT §3)."""
    encode = _JSON.encode
    step = 10_000
    for i in range(0, len(findings), step):
        out.write(b"".join(encode(f.to_wire()) + b"\n" for f in findings[i : i + step]).decode())
    out.flush()


def main(
    args: argparse.Namespace,
    *,
    opener: StoreOpener = open_store,
    clock: Callable[[], float] = time.perf_counter,
) -> int:
    started = clock()
    stderr = sys.stderr
    quiet = bool(args.quiet)
    problems = []
    until = None
    if args.until is not None:
        try:
            until = parse_ts(int(args.until) if _DIGITS.fullmatch(args.until) else args.until)
        except ValueError as exc:
            problems.append(f"--until: {exc}")
    retention_ms = DEFAULT_RETENTION_MS
    if args.retention is not None:
        try:
            retention_ms = parse_duration(args.retention)
        except ValueError as exc:
            problems.append(f"--retention: {exc}")
        else:
            if retention_ms <= 0:
                problems.append(f"--retention: {args.retention!r} must be longer than 0")
    if args.store is not None and not args.store.startswith(STORE_SCHEMES):
        problems.append(f"--store: {args.store!r} must be chdb:///DIR, http://HOST:PORT or https://HOST:PORT")
    try:
        journeys = load_journeys(args.journeys)
    except JourneysError as exc:
        problems.extend(exc.problems)
    if problems:
        return _usage(problems, stderr)
    with ExitStack() as stack:
        stack.enter_context(tuned_gc())  # the replay holds every open order, as a tracer process does
        try:
            source, total, position = _open_events(args.events, stack)
        except OSError as exc:
            return _usage([f"EVENTS: {args.events}: cannot be read: {exc.strerror or exc}"], stderr)
        store: _GuardedStore | None = None
        if args.store is not None:
            try:
                store = _GuardedStore(opener(args.store))
            except Exception as exc:  # any driver error opening it means the URL is not usable
                return _usage([f"--store: {args.store}: cannot be opened: {exc}"], stderr)
            stack.callback(store.close_quietly)

        def report(line: int, reason: str) -> None:
            stderr.write(f"line {line}: {reason}\n")

        reading = Progress.on(stderr, "reading", total, BYTES, quiet=quiet)
        try:
            stitcher = Stitcher(journeys)
            read = read_events(
                source, report, reading, position, lean=store is None, stitcher=stitcher if stitcher.active else None
            )
        except (OSError, EOFError, zlib.error) as exc:
            return _usage([f"EVENTS: {args.events}: cannot be read: {exc}"], stderr)
        finally:
            reading.close()
        replaying = Progress.on(stderr, "replaying", len(read.events), EVENTS, quiet=quiet)
        try:
            outcome = replay(
                journeys, read.events, until=until, store=store, retention_ms=retention_ms, progress=replaying
            )
            if store is not None:
                store.close()
        except StoreError as exc:
            stderr.write(f"error: --store {args.store}: {exc}\n")
            return EXIT_FAILED
        finally:
            replaying.close()
    write_findings(outcome.findings, sys.stdout)
    if not quiet:
        stderr.write(summary(read, outcome, clock() - started) + "\n")
    return EXIT_OK


def summary(read: ReadResult, outcome: Outcome, elapsed_s: float) -> str:
    """The one line printed to stderr at the end of a backtest."""
    accepted = len(read.events)
    stats = outcome.stats
    counts = [
        _many(read.lines, "line"),
        f"{accepted:,} accepted",
        f"{read.rejected:,} rejected",
        _many(stats.duplicates, "duplicate"),
        _many(outcome.orders, "order"),
    ]
    if stats.after_close:
        counts.append(f"{_many(stats.after_close, 'event')} for orders already closed")
    if outcome.skipped:
        counts.append(f"{_many(outcome.skipped, 'event')} after --until not replayed")
    kinds = []
    for kind in FINDING_KINDS:
        if by_status := outcome.by_kind.get(kind):
            detail = ", ".join(f"{n:,} {status}" for status in (OPEN, RESOLVED) if (n := by_status.get(status, 0)))
            kinds.append(f"{kind} {sum(by_status.values()):,} ({detail})")
    rate = accepted / elapsed_s if elapsed_s > 0 else 0.0
    return (
        f"backtest: {', '.join(counts)}; findings: {', '.join(kinds) if kinds else 'none'}; "
        f"{elapsed_s:.2f} s, {rate:,.0f} events/s"
    )


def _many(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _open_events(name: str, stack: ExitStack) -> tuple[IO[bytes], int | None, Callable[[], int] | None]:
    """The byte stream of the events, its size in bytes when known, and how far into it we are."""
    if name == "-":
        return sys.stdin.buffer, None, None
    raw = stack.enter_context(open(name, "rb"))  # noqa: SIM115 - closed by the stack
    total = os.fstat(raw.fileno()).st_size or None
    if name.endswith(".gz"):
        unzipped = gzip.GzipFile(fileobj=raw)
        stack.callback(unzipped.close)
        return cast(IO[bytes], unzipped), total, raw.tell
    return raw, total, raw.tell


class _GuardedStore:
    """A store whose every failure is a StoreError, closed once. Batches are inserted in the
    background (``tracer.storewriter``: the ClickHouse store serializes a batch on this thread,
    then the replay goes on with the next one while it is inserted); a failure surfaces at the
    next write or at ``close``, which waits for the last batch."""

    def __init__(self, store: Store) -> None:
        self._store: Store | None = store
        sink = cast("Sink", store) if isinstance(store, PreparingSink) else _Writes(store)
        self._writer = StoreWriter(sink)

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        if self._store is None:
            raise StoreError("the store is closed")
        self._writer.write(events, findings, snapshots)

    def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                self._writer.close()
            finally:
                try:
                    store.close()
                except StoreError:
                    raise
                except Exception as exc:
                    raise StoreError(f"the store failed while closing: {exc}") from exc

    def close_quietly(self) -> None:
        # Only called when the run already failed for another reason, which is the one to report.
        with suppress(StoreError):
            self.close()


class _Writes:
    """The store as the writer's sink: a driver error is a store failure of the replay."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        try:
            self._store.write(events, findings, snapshots)
        except StoreError:
            raise
        except Exception as exc:  # a driver error is a store failure too
            raise StoreError(f"the store failed during the replay: {exc}") from exc

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        raise StoreError("a backtest reads no open orders")

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        raise StoreError("a backtest reads no closed orders")


def _usage(problems: list[str], stderr: TextIO) -> int:
    for problem in problems:
        stderr.write(f"error: {problem}\n")
    return EXIT_USAGE
