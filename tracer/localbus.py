"""The embedded durable bus: Kafka's guarantees on one machine, in one directory.

Layout under the data directory::

    LOCK                                   exclusive flock held while open; holds the owner's pid
    topics/<topic>/topic.json              {"format": 1, "partitions": N}
    topics/<topic>/<partition>/<base>.log  segments; <base> (20 digits) is the offset of their first record
    groups/<group>/<topic>.json            committed positions (next offset to read) per partition

A segment is a run of frames, each ``u32 body length | u32 crc32(body) | body`` where body is
``u64 offset | i64 timestamp_ms | u16 key length | u16 header count | key |
(u16 name length, u32 value length, name, value) per header | value`` (little-endian).

Guarantees:

* ``produce_batch`` writes each touched partition's frames with one write(), fsyncs every touched
  partition (in parallel: one journal commit covers them all) and only then makes the records
  visible to consumers and returns. Any number of threads may produce; a partition keeps the
  order of its appends.
* A segment rolls at ``segment_bytes`` (the old one is fsync'd first). Retention deletes whole
  sealed segments that every consumer group of the topic has committed past, and, when configured,
  those older than ``retention_ms`` or beyond ``retention_bytes`` per partition (unread records
  deleted that way are logged and counted).
* Opening recovers: the last segment of each partition is read and CRC-checked; a torn last frame
  (a crash mid-write, so never acknowledged) is truncated. An unreadable frame with valid frames
  after it is skipped when read. Both are logged and counted (``BusStats``); nothing else is dropped.
* One process owns a data directory (an exclusive lock); a second open fails with ``BusLockedError``.
* Committed positions are replaced atomically (temp file, fsync, rename, fsync of the directory)
  and only move forward. A new consumer starts at its group's committed positions, else the start.

A consumer reads one topic, all its partitions, for one group, from one thread (as Kafka's
consumers); ``lag``, ``position`` and ``end_offsets`` may be read from any thread.

This module knows only the local filesystem; it imports no bus client.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import struct
import threading
import time
import zlib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracer.bus import (
    DEADLETTER_TOPIC,
    HOPS_PARTITIONS,
    HOPS_TOPIC,
    BusError,
    BusLockedError,
    KeyPartitioner,
    Message,
    RebalanceListener,
    Record,
)
from tracer.clock import Clock, WallClock

log = logging.getLogger("ordertrail.bus")

_FRAME = struct.Struct("<II")  # body length, crc32(body)
_BODY = struct.Struct("<QqHH")  # offset, timestamp_ms, key length, header count
_HEAD = struct.Struct("<IIQqHH")  # both, for reading
_HEADER = struct.Struct("<HI")  # header name length, header value length
_HEAD_SIZE = _HEAD.size
_MAX_BODY = 64 << 20  # larger lengths are garbage, whatever the topic allows
_FORMAT = 1
_CHUNK = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True, slots=True)
class TopicConfig:
    partitions: int = 1
    segment_bytes: int = 32 << 20
    retention_ms: int | None = None  # also delete sealed segments older than this, read or not
    retention_bytes: int | None = None  # also keep each partition under this size, read or not
    max_record_bytes: int = 1 << 20  # key + headers + value of one record


def default_topics() -> dict[str, TopicConfig]:
    """The hops topic (kept until every group has committed past it) and the dead letters (a week)."""
    return {
        HOPS_TOPIC: TopicConfig(partitions=HOPS_PARTITIONS),
        DEADLETTER_TOPIC: TopicConfig(partitions=1, retention_ms=7 * 86_400_000),
    }


@dataclass(slots=True)
class BusStats:
    torn_tails: int = 0  # torn last frames truncated when opening (crash mid-write)
    torn_bytes: int = 0
    corrupt_regions: int = 0  # unreadable stretches skipped while reading
    corrupt_bytes: int = 0
    lost_records: int = 0  # offsets that could not be read because of corruption
    segments_deleted: int = 0
    unread_deleted: int = 0  # records deleted by age/size retention before every group read them


class _Segment:
    __slots__ = ("base", "fd", "path")

    def __init__(self, base: int, path: Path, fd: int) -> None:
        self.base, self.path, self.fd = base, path, fd


class _Partition:
    """One partition's log. ``lock`` serialises appends, rolls and deletions; the topic's condition
    guards ``durable``, ``in_flight`` and ``retired``."""

    __slots__ = (
        "active",
        "bases",
        "broken",
        "dir",
        "durable",
        "in_flight",
        "lock",
        "next_offset",
        "number",
        "pos",
        "retired",
        "tail",
    )

    def __init__(self, number: int, directory: Path, bases: list[int], active: _Segment, pos: int, nxt: int) -> None:
        self.number, self.dir = number, directory
        self.lock = threading.Lock()
        self.bases = bases  # replaced, never mutated: readers use it without the lock
        self.active, self.pos, self.next_offset = active, pos, nxt
        self.tail = (active, pos, nxt)  # after the last write: (segment, byte end, next offset)
        self.durable = (active.base, pos, nxt)  # fsync'd and visible: (segment base, byte end, next offset)
        self.in_flight = 0
        self.retired: list[_Segment] = []
        self.broken: str | None = None


class _Topic:
    __slots__ = ("committed", "cond", "config", "consumers", "name", "partitioner", "parts", "version")

    def __init__(self, name: str, config: TopicConfig, parts: list[_Partition]) -> None:
        self.name, self.config, self.parts = name, config, parts
        self.partitioner = KeyPartitioner(config.partitions)
        self.cond = threading.Condition()
        self.version = 0  # bumped (under cond) whenever records become visible
        self.committed: dict[str, dict[int, int]] = {}  # group -> partition -> next offset
        self.consumers: set[str] = set()


class LocalBus:
    """The embedded log: a ``Producer``, and the factory of ``LocalConsumer``s."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        topics: Mapping[str, TopicConfig] | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.dir = Path(data_dir)
        self.stats = BusStats()
        self._clock: Clock = clock or WallClock()
        self._closed = False
        self._stats_lock = threading.Lock()
        self._lock_fd = _open_dir_and_lock(self.dir)
        self._topics: dict[str, _Topic] = {}
        try:
            wanted: dict[str, TopicConfig | None] = dict(default_topics() if topics is None else topics)
            for existing in _listdir(self.dir / "topics"):
                wanted.setdefault(existing, None)  # found on disk: opened as it was created
            for name, config in sorted(wanted.items()):
                self._topics[name] = self._open_topic(name, config)
            self._load_groups()
        except BaseException:
            for t in self._topics.values():
                for part in t.parts:
                    _close_quietly(part.active.fd)
            self._release()
            raise
        workers = min(8, max(t.config.partitions for t in self._topics.values()) if self._topics else 1)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ordertrail-bus-fsync")

    # --- the Producer role -------------------------------------------------------------------

    def produce_batch(self, topic: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
        """See ``tracer.bus.Producer``. Invalid messages fail the batch before anything is written;
        if a write or fsync fails, part of the batch may still be appended and delivered later, so
        the caller retries and consumers dedupe (at-least-once)."""
        t = self._topic(topic)
        if not messages:
            return []
        limit = t.config.max_record_bytes
        partition_of = t.partitioner
        by_part: dict[int, list[int]] = {}
        keys: list[bytes] = []
        for i, m in enumerate(messages):
            kb = m.key.encode()
            value = m.value
            if type(value) is not bytes or len(kb) > 0xFFFF or 20 + len(kb) + len(value) > limit or m.headers:
                _check_message(i, m, kb, limit)
            keys.append(kb)
            p = partition_of(m.key)
            idx = by_part.get(p)
            if idx is None:
                by_part[p] = [i]
            else:
                idx.append(i)
        now = self._clock.now_ms()
        result: list[tuple[int, int]] = [(0, 0)] * len(messages)
        touched: list[_Partition] = []
        for p, idx in by_part.items():
            part = t.parts[p]
            first = self._append(t, part, [messages[i] for i in idx], [keys[i] for i in idx], now)
            for n, i in enumerate(idx):
                result[i] = (p, first + n)
            touched.append(part)
        try:
            futures = [self._pool.submit(self._sync, t, part) for part in touched[1:]]
        except RuntimeError as exc:  # the pool is shut down: closed while we appended
            raise BusError(f"the embedded bus at {self.dir} was closed during the append") from exc
        failure: BusError | None = None
        try:
            self._sync(t, touched[0])
        except BusError as exc:
            failure = exc
        for future in futures:  # wait for every sync, whatever happened to the others
            try:
                future.result()
            except BusError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return result

    # --- consumers and positions -------------------------------------------------------------

    def consumer(self, topic: str, group: str, *, listener: RebalanceListener | None = None) -> LocalConsumer:
        """The one consumer of ``group`` on ``topic``: all partitions, from the committed positions."""
        t = self._topic(topic)
        _check_name("group", group)
        with t.cond:
            if group in t.consumers:
                raise BusError(
                    f"group {group!r} already has an open consumer on {topic!r}; the embedded bus gives one "
                    "consumer all partitions (close the other one, or use another group)"
                )
            t.consumers.add(group)
        try:
            if group not in t.committed:  # register the group so retention waits for it
                self._store_commit(t, group, {})
            return LocalConsumer(self, t, group, listener)
        except BaseException:
            with t.cond:
                t.consumers.discard(group)
            raise

    def partitions(self, topic: str) -> list[int]:
        return list(range(self._topic(topic).config.partitions))

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset each partition will give (records below it are durable and readable)."""
        return {p.number: p.durable[2] for p in self._topic(topic).parts}

    def start_offsets(self, topic: str) -> dict[int, int]:
        """The first offset each partition still holds (retention deletes below it)."""
        return {p.number: p.bases[0] for p in self._topic(topic).parts}

    def committed(self, topic: str, group: str) -> dict[int, int]:
        return dict(self._topic(topic).committed.get(group, {}))

    def enforce_retention(self) -> int:
        """Apply every topic's retention now (it also runs on each roll and commit). Returns the
        number of segments deleted."""
        deleted = 0
        for t in self._topics.values():
            for part in t.parts:
                with part.lock:
                    deleted += self._retain(t, part)
        return deleted

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for t in self._topics.values():
            with t.cond:
                t.version += 1
                t.cond.notify_all()
        self._pool.shutdown(wait=True)
        for t in self._topics.values():
            for part in t.parts:
                with part.lock:
                    for seg in [part.active, *part.retired]:
                        _close_quietly(seg.fd)
                    part.retired = []
        self._release()

    def __enter__(self) -> LocalBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- appending -----------------------------------------------------------------------------

    def _append(self, t: _Topic, part: _Partition, msgs: list[Message], keys: list[bytes], now: int) -> int:
        body_pack, frame_pack, header_pack, crc32 = _BODY.pack, _FRAME.pack, _HEADER.pack, zlib.crc32
        with part.lock:
            if self._closed:
                raise BusError(f"the embedded bus at {self.dir} is closed")
            if part.broken:
                raise BusError(part.broken)
            first = off = part.next_offset
            chunks: list[bytes] = []
            add = chunks.extend
            for m, kb in zip(msgs, keys, strict=True):
                ts = now if m.timestamp_ms is None else m.timestamp_ms
                value = m.value
                if m.headers:
                    hb = b"".join(
                        header_pack(len(nb), len(v)) + nb + v for nb, v in ((n.encode(), v) for n, v in m.headers)
                    )
                    body = body_pack(off, ts, len(kb), len(m.headers))
                    crc = crc32(value, crc32(hb, crc32(kb, crc32(body))))
                    add((frame_pack(len(body) + len(kb) + len(hb) + len(value), crc), body, kb, hb, value))
                else:
                    body = body_pack(off, ts, len(kb), 0)
                    crc = crc32(value, crc32(kb, crc32(body)))
                    add((frame_pack(len(body) + len(kb) + len(value), crc), body, kb, value))
                off += 1
            blob = b"".join(chunks)
            if part.pos and part.pos + len(blob) > t.config.segment_bytes:
                self._roll(t, part)
            seg = part.active
            try:
                _write_all(seg.fd, blob)
            except OSError as exc:
                try:  # take the partial write back so the next append starts on a frame boundary
                    os.ftruncate(seg.fd, part.pos)
                except OSError:
                    part.broken = f"{seg.path}: a failed write could not be undone ({exc.strerror}); reopen the bus"
                raise BusError(f"cannot append to {seg.path}: {exc.strerror}") from exc
            part.pos += len(blob)
            part.next_offset = off
            part.tail = (seg, part.pos, off)
            return first

    def _sync(self, t: _Topic, part: _Partition) -> None:
        """Make everything written to ``part`` so far durable, then visible."""
        with t.cond:
            if part.broken:
                raise BusError(part.broken)
            part.in_flight += 1
            seg, pos, nxt = part.tail
        failure: OSError | None = None
        try:
            os.fsync(seg.fd)
        except OSError as exc:
            failure = exc
        with t.cond:
            part.in_flight -= 1
            if failure is not None:
                # after a failed fsync the kernel may have dropped the dirty pages: never trust this log again
                part.broken = f"{seg.path}: fsync failed ({failure.strerror}); reopen the bus to recover"
            elif nxt > part.durable[2]:
                part.durable = (seg.base, pos, nxt)
                t.version += 1
                t.cond.notify_all()
            if not part.in_flight and part.retired:
                for old in part.retired:
                    _close_quietly(old.fd)
                part.retired = []
        if failure is not None:
            raise BusError(part.broken or "fsync failed") from failure

    def _roll(self, t: _Topic, part: _Partition) -> None:
        """Seal the active segment (durably) and start a new one. Caller holds ``part.lock``."""
        old = part.active
        try:
            os.fsync(old.fd)
            new = _create_segment(part.dir, part.next_offset)
        except OSError as exc:
            raise BusError(f"cannot roll {old.path}: {exc.strerror}") from exc
        part.bases = [*part.bases, new.base]
        part.active, part.pos = new, 0
        part.tail = (new, 0, part.next_offset)
        with t.cond:
            if part.next_offset >= part.durable[2]:
                part.durable = (new.base, 0, part.next_offset)
                t.version += 1
                t.cond.notify_all()
            if part.in_flight:
                part.retired.append(old)
            else:
                _close_quietly(old.fd)
        self._retain(t, part)

    # --- retention -------------------------------------------------------------------------------

    def _retain(self, t: _Topic, part: _Partition) -> int:
        """Delete the oldest sealed segments that retention allows. Caller holds ``part.lock``."""
        cfg = t.config
        bases = part.bases
        if len(bases) < 2:
            return 0
        groups = list(t.committed.values())
        floor = min((g.get(part.number, 0) for g in groups), default=None)
        sizes: list[int] = []
        if cfg.retention_bytes is not None:
            sizes = [_size(part.dir / _segment_name(b)) for b in bases]
        total = sum(sizes)
        now = self._clock.now_ms()
        doomed = 0
        for i in range(len(bases) - 1):
            end = bases[i + 1]
            path = part.dir / _segment_name(bases[i])
            if floor is not None and floor >= end:
                reason = "committed"
            elif cfg.retention_bytes is not None and total > cfg.retention_bytes:
                reason = "size"
            elif cfg.retention_ms is not None and now - _mtime_ms(path) > cfg.retention_ms:
                reason = "age"
            else:
                break
            unread = 0 if reason == "committed" else end - max(bases[i], floor if floor is not None else bases[i])
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("cannot delete %s for retention: %s", path, exc.strerror)
                break
            if unread > 0:
                log.warning(
                    "%s partition %d: deleted %d records by %s retention that %s",
                    t.name,
                    part.number,
                    unread,
                    reason,
                    "no consumer group had read" if floor is None else "a consumer group had not read yet",
                )
            self._count(segments_deleted=1, unread_deleted=max(unread, 0))
            if sizes:
                total -= sizes[i]
            doomed = i + 1
        if doomed:
            part.bases = bases[doomed:]
            _fsync_dir(part.dir)
        return doomed

    # --- opening -------------------------------------------------------------------------------

    def _open_topic(self, name: str, wanted: TopicConfig | None) -> _Topic:
        _check_name("topic", name)
        config = wanted or TopicConfig()
        if config.partitions < 1 or config.segment_bytes < 1024 or not 0 < config.max_record_bytes <= _MAX_BODY:
            raise BusError(
                f"topic {name!r}: partitions must be >= 1, segment_bytes >= 1024 and max_record_bytes in "
                f"1..{_MAX_BODY}; got {config}"
            )
        tdir = self.dir / "topics" / name
        meta_path = tdir / "topic.json"
        if meta_path.exists():
            meta = _read_json(meta_path)
            if meta.get("format") != _FORMAT or not isinstance(meta.get("partitions"), int):
                raise BusError(f"{meta_path}: format {meta.get('format')!r} is not {_FORMAT}; this bus cannot read it")
            if wanted is None:
                config = TopicConfig(partitions=meta["partitions"])
            elif config.partitions != meta["partitions"]:
                raise BusError(
                    f"topic {name!r} has {meta['partitions']} partitions in {tdir}, not {config.partitions}: "
                    "keys would move to other partitions; keep the count or start with another data directory"
                )
        else:
            _mkdir(tdir)
            _write_json_atomic(meta_path, {"format": _FORMAT, "partitions": config.partitions})
        parts = [self._recover(name, p, tdir / str(p)) for p in range(config.partitions)]
        return _Topic(name, config, parts)

    def _recover(self, topic: str, number: int, pdir: Path) -> _Partition:
        """Open a partition: find its segments, check the last one frame by frame, cut a torn tail."""
        _mkdir(pdir)
        bases = sorted(int(f.name[:-4]) for f in pdir.iterdir() if f.name.endswith(".log") and f.name[:-4].isdigit())
        if not bases:
            seg = _create_segment(pdir, 0)
            return _Partition(number, pdir, [0], seg, 0, 0)
        base = bases[-1]
        path = pdir / _segment_name(base)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BusError(f"cannot read {path}: {exc.strerror}; check its permissions") from exc
        pos, nxt, end = 0, base, len(data)
        while pos < end:
            size = _frame_size(data, pos, end)
            if size > 0 and _BODY.unpack_from(data, pos + 8)[0] >= nxt:
                nxt = _BODY.unpack_from(data, pos + 8)[0] + 1
                pos += size
                continue
            resume = _next_frame(data, pos + 1, end, nxt)
            if resume < 0:
                log.warning(
                    "%s partition %d: truncated %d bytes after the last whole record of %s (byte %d): a write cut "
                    "short by a crash, never acknowledged",
                    topic,
                    number,
                    end - pos,
                    path,
                    pos,
                )
                self._count(torn_tails=1, torn_bytes=end - pos)
                try:
                    os.truncate(path, pos)
                except OSError as exc:
                    raise BusError(f"cannot truncate the torn tail of {path}: {exc.strerror}") from exc
                break
            first = _BODY.unpack_from(data, resume + 8)[0]
            log.error(
                "%s partition %d: %d unreadable bytes at byte %d of %s; offsets %d..%d are lost, readers skip them",
                topic,
                number,
                resume - pos,
                pos,
                path,
                nxt,
                first - 1,
            )
            pos = resume
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | _O_CLOEXEC)
            os.fsync(fd)
        except OSError as exc:
            raise BusError(f"cannot open {path} for writing: {exc.strerror}; check its permissions") from exc
        return _Partition(number, pdir, bases, _Segment(base, path, fd), pos, nxt)

    def _load_groups(self) -> None:
        for group in _listdir(self.dir / "groups"):
            for name in _listdir(self.dir / "groups" / group):
                if not name.endswith(".json") or name[:-5] not in self._topics:
                    continue
                path = self.dir / "groups" / group / name
                data = _read_json(path)
                positions = data.get("positions")
                if data.get("format") != _FORMAT or not isinstance(positions, dict):
                    raise BusError(f"{path}: not a committed-positions file of format {_FORMAT}")
                try:
                    self._topics[name[:-5]].committed[group] = {int(p): int(o) for p, o in positions.items()}
                except (TypeError, ValueError) as exc:
                    raise BusError(f"{path}: positions must map partition numbers to offsets ({exc})") from exc

    # --- small shared pieces -------------------------------------------------------------------

    def _topic(self, name: str) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            raise BusError(f"topic {name!r} does not exist in {self.dir}; known topics: {sorted(self._topics)}")
        return t

    def _store_commit(self, t: _Topic, group: str, positions: dict[int, int]) -> None:
        gdir = self.dir / "groups" / group
        _mkdir(gdir)
        doc = {"format": _FORMAT, "positions": {str(p): o for p, o in sorted(positions.items())}}
        _write_json_atomic(gdir / f"{t.name}.json", doc)
        t.committed[group] = dict(positions)

    def _count(self, **amounts: int) -> None:
        with self._stats_lock:
            for name, n in amounts.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def _release(self) -> None:
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            _close_quietly(self._lock_fd)
            self._lock_fd = -1


class LocalConsumer:
    """Reads every partition of one topic for one consumer group (see ``tracer.bus.Consumer``)."""

    def __init__(self, bus: LocalBus, topic: _Topic, group: str, listener: RebalanceListener | None) -> None:
        self.topic, self.group = topic.name, group
        self._bus, self._t, self._listener = bus, topic, listener
        committed = topic.committed.get(group, {})
        self._readers = [
            _Reader(bus, topic, part, _start(topic.name, part, committed.get(part.number))) for part in topic.parts
        ]
        self._assigned = False
        self._closed = False
        self._woken = False
        self._turn = 0

    def assignment(self) -> list[int]:
        return [r.part.number for r in self._readers]

    def poll(self, max_records: int = 500, timeout_s: float = 0.0) -> list[Record]:
        if self._closed:
            raise BusError(f"the consumer of group {self.group!r} on {self.topic!r} is closed")
        if not self._assigned:
            self._assigned = True
            if self._listener is not None:
                self._listener.on_assigned(self.assignment())
        t = self._t
        deadline = time.monotonic() + timeout_s
        while True:
            version = t.version
            out = self._read(max(1, max_records))
            if out or self._bus._closed:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            with t.cond:
                if t.version == version and not self._woken:
                    t.cond.wait(remaining)
                if self._woken:
                    self._woken = False
                    return []

    def wakeup(self) -> None:
        """Make a poll blocked in another thread return now (with what it has, possibly nothing)."""
        with self._t.cond:
            self._woken = True
            self._t.cond.notify_all()

    def commit(self, positions: Mapping[int, int]) -> None:
        t = self._t
        current = t.committed.get(self.group, {})
        new = dict(current)
        for p, offset in positions.items():
            if not 0 <= p < len(t.parts):
                raise BusError(f"commit: partition {p} is not one of {self.topic!r}'s 0..{len(t.parts) - 1}")
            end = t.parts[p].durable[2]
            if not 0 <= offset <= end:
                raise BusError(f"commit: offset {offset} of {self.topic!r} partition {p} is outside 0..{end}")
            if offset > new.get(p, -1):
                new[p] = offset
        if new != current:
            self._bus._store_commit(t, self.group, new)
            for p, offset in new.items():
                part = t.parts[p]
                if len(part.bases) > 1 and offset >= part.bases[1]:
                    with part.lock:
                        self._bus._retain(t, part)

    def committed(self) -> dict[int, int]:
        return dict(self._t.committed.get(self.group, {}))

    def position(self) -> dict[int, int]:
        """The next offset this consumer will read, per partition."""
        return {r.part.number: r.next for r in self._readers}

    def end_offsets(self) -> dict[int, int]:
        return {r.part.number: r.part.durable[2] for r in self._readers}

    def lag(self) -> dict[int, int]:
        return {r.part.number: max(0, r.part.durable[2] - r.next) for r in self._readers}

    def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` on. Below the log's start it starts at the start (with a
        warning); past the durable end it is refused."""
        if not 0 <= partition < len(self._readers):
            raise BusError(f"seek: partition {partition} is not one of {self.topic!r}'s 0..{len(self._readers) - 1}")
        self._readers[partition].seek(offset)

    def seek_to_committed(self) -> None:
        committed = self.committed()
        for r in self._readers:
            r.seek(_start(self.topic, r.part, committed.get(r.part.number)))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._assigned and self._listener is not None:
            self._listener.on_revoked(self.assignment())
        for r in self._readers:
            r.close()
        with self._t.cond:
            self._t.consumers.discard(self.group)

    def _read(self, max_records: int) -> list[Record]:
        """Fair across partitions: each gets an equal share first, then the rest fills up."""
        readers = self._readers
        n = len(readers)
        self._turn = (self._turn + 1) % n
        order = readers[self._turn :] + readers[: self._turn]
        share = -(-max_records // n)
        out: list[Record] = []
        for r in order:
            if len(out) >= max_records:
                break
            r.read(min(share, max_records - len(out)), out)
        for r in order:
            if len(out) >= max_records:
                break
            r.read(max_records - len(out), out)
        return out


def _start(topic: str, part: _Partition, committed: int | None) -> int:
    """Where a consumer starts: its group's committed position, else the first offset still held."""
    if committed is None:
        return part.bases[0]
    end = part.durable[2]
    if committed > end:
        log.error(
            "%s partition %d: the group committed %d but the log ends at %d: records were lost from the log "
            "(was the data directory restored from an old copy?); reading from %d",
            topic,
            part.number,
            committed,
            end,
            end,
        )
        return end
    return committed


class _Reader:
    """Reads one partition forward, never past its durable end, resyncing over unreadable bytes."""

    __slots__ = ("_bpos", "_buf", "_bus", "_fd", "_file_pos", "_seg_base", "_topic", "next", "part")

    def __init__(self, bus: LocalBus, topic: _Topic, part: _Partition, offset: int) -> None:
        self._bus, self._topic, self.part = bus, topic.name, part
        self._fd = -1
        self._seg_base = -1
        self._buf = b""
        self._bpos = self._file_pos = 0
        self.next = 0
        self.seek(offset)

    def close(self) -> None:
        if self._fd >= 0:
            _close_quietly(self._fd)
            self._fd = -1

    def seek(self, offset: int) -> None:
        part = self.part
        end = part.durable[2]
        if not 0 <= offset <= end:
            raise BusError(f"offset {offset} of {self._topic!r} partition {part.number} is outside 0..{end}")
        bases = part.bases
        if offset < bases[0]:
            log.warning(
                "%s partition %d: offsets %d..%d were deleted by retention before being read; starting at %d",
                self._topic,
                part.number,
                offset,
                bases[0] - 1,
                bases[0],
            )
            offset = bases[0]
        self._open(bases[bisect_right(bases, offset) - 1])
        while self.next < offset:
            if not self.read(offset - self.next, None):
                break

    def read(self, want: int, out: list[Record] | None) -> int:
        """Append up to ``want`` records to ``out`` (None: skip them). Returns how many."""
        done = 0
        while done < want:
            dbase, dpos, dnext = self.part.durable
            if self.next >= dnext:
                break
            got = self._decode(want - done, dnext, out)
            done += got
            if got:
                continue
            sealed = self._seg_base < dbase
            if self._fill(None if sealed else dpos):
                continue
            if self._bpos < len(self._buf) or not sealed:
                # durable bytes that do not make a whole frame: corruption, not a write in progress
                self._resync(dnext)
            else:
                self._next_segment()
        return done

    def _decode(self, want: int, dnext: int, out: list[Record] | None) -> int:
        buf, pos, nxt = self._buf, self._bpos, self.next
        end = len(buf)
        head, crc32, topic, number = _HEAD.unpack_from, zlib.crc32, self._topic, self.part.number
        n = 0
        while n < want and nxt < dnext and end - pos >= _HEAD_SIZE:
            length, crc, off, ts, klen, nh = head(buf, pos)
            stop = pos + 8 + length
            if stop > end and _HEAD_SIZE - 8 <= length <= _MAX_BODY:
                break  # the rest of this frame is not buffered yet
            if length < _HEAD_SIZE - 8 or length > _MAX_BODY or crc32(buf[pos + 8 : stop]) != crc or off < nxt:
                self._bpos, self.next = pos, nxt
                self._resync(dnext)
                return n
            if out is not None:
                p = pos + _HEAD_SIZE + klen
                key = buf[pos + _HEAD_SIZE : p].decode("utf-8", "replace")
                headers: list[tuple[str, bytes]] | tuple[()] = ()
                if nh:
                    headers = []
                    for _ in range(nh):
                        nl, vl = _HEADER.unpack_from(buf, p)
                        p += 6
                        headers.append((buf[p : p + nl].decode("utf-8", "replace"), buf[p + nl : p + nl + vl]))
                        p += nl + vl
                out.append(Record(topic, number, off, ts, key, buf[p:stop], headers))
            nxt = off + 1
            pos = stop
            n += 1
        self._bpos, self.next = pos, nxt
        return n

    def _fill(self, limit: int | None) -> bool:
        """Read more of the current segment (up to byte ``limit``). False when there is no more."""
        start = self._file_pos + len(self._buf)
        size = _CHUNK
        pending = len(self._buf) - self._bpos
        if pending >= 8:
            size = max(size, 8 + _FRAME.unpack_from(self._buf, self._bpos)[0] - pending)
        if limit is not None:
            size = min(size, limit - start)
        if size <= 0:
            return False
        data = os.pread(self._fd, min(size, _MAX_BODY + 8), start)
        if not data:
            return False
        self._buf = self._buf[self._bpos :] + data
        self._file_pos += self._bpos
        self._bpos = 0
        return True

    def _resync(self, dnext: int) -> None:
        """Skip unreadable bytes at the read position up to the next valid frame, logging what is lost.
        In a sealed segment with nothing valid left, the records lost are counted when the next
        segment is opened (its base offset says how many)."""
        part = self.part
        dbase, dpos, _ = part.durable
        sealed = self._seg_base < dbase
        while self._fill(None if sealed else dpos):
            pass
        buf, at = self._buf, self._bpos
        resume = _next_frame(buf, at + 1, len(buf), self.next)
        if resume >= 0:
            lost = _BODY.unpack_from(buf, resume + 8)[0] - self.next
        elif sealed:
            lost = 0
        else:
            lost = dnext - self.next
        stop = resume if resume >= 0 else len(buf)
        log.error(
            "%s partition %d: %d unreadable bytes at byte %d of segment %d skipped (%d records lost)",
            self._topic,
            part.number,
            stop - at,
            self._file_pos + at,
            self._seg_base,
            lost,
        )
        self._bus._count(corrupt_regions=1, corrupt_bytes=stop - at, lost_records=lost)
        self._bpos = stop
        if resume < 0 and not sealed:
            self.next = dnext  # nothing readable is left before the durable end

    def _next_segment(self) -> None:
        bases = self.part.bases
        i = bisect_right(bases, self._seg_base)
        if i < len(bases):
            expected = self.next
            self._open(bases[i])
            if self.next > expected:
                log.error(
                    "%s partition %d: offsets %d..%d are missing",
                    self._topic,
                    self.part.number,
                    expected,
                    self.next - 1,
                )
                self._bus._count(lost_records=self.next - expected)

    def _open(self, base: int) -> None:
        self.close()
        path = self.part.dir / _segment_name(base)
        try:
            self._fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        except FileNotFoundError as exc:
            if base < self.part.bases[0]:  # deleted by retention meanwhile: go on from what the log holds
                self.seek(self.part.bases[0])
                return
            raise BusError(f"{path} is missing: the log was changed behind the bus's back") from exc
        except OSError as exc:
            raise BusError(f"cannot read {path}: {exc.strerror}; check its permissions") from exc
        self._seg_base, self.next = base, base
        self._buf, self._bpos, self._file_pos = b"", 0, 0


# --- frames ---------------------------------------------------------------------------------------


def _frame_size(buf: bytes, pos: int, end: int) -> int:
    """Size of the valid frame at ``pos``, or 0 if there is none (too short, bad length or CRC)."""
    if end - pos < _HEAD_SIZE:
        return 0
    length, crc = _FRAME.unpack_from(buf, pos)
    stop = pos + 8 + length
    if length < _HEAD_SIZE - 8 or length > _MAX_BODY or stop > end:
        return 0
    return 8 + length if zlib.crc32(buf[pos + 8 : stop]) == crc else 0


def _next_frame(buf: bytes, start: int, end: int, min_offset: int) -> int:
    """Where the next valid frame with an offset >= ``min_offset`` starts, or -1."""
    for q in range(start, end - _HEAD_SIZE + 1):
        if _frame_size(buf, q, end) and _BODY.unpack_from(buf, q + 8)[0] >= min_offset:
            return q
    return -1


def _check_message(index: int, m: Message, kb: bytes, limit: int) -> None:
    where = f"message {index} (key {m.key[:80]!r})"
    if type(m.value) is not bytes:
        raise BusError(f"{where}: value is {type(m.value).__name__}; it must be bytes")
    if len(kb) > 0xFFFF:
        raise BusError(f"{where}: the key is {len(kb)} bytes; at most 65535 are allowed")
    size = _HEAD_SIZE - 8 + len(kb) + len(m.value)
    if len(m.headers) > 0xFFFF:
        raise BusError(f"{where}: {len(m.headers)} headers; at most 65535 are allowed")
    for name, value in m.headers:
        if type(value) is not bytes or len(name.encode()) > 0xFFFF:
            raise BusError(f"{where}: header {name[:80]!r} must have a name under 64 KiB and a bytes value")
        size += 6 + len(name.encode()) + len(value)
    if size > limit:
        raise BusError(f"{where}: {size} bytes with key and headers; the topic allows at most {limit}")


# --- files ----------------------------------------------------------------------------------------


def _segment_name(base: int) -> str:
    return f"{base:020d}.log"


def _create_segment(pdir: Path, base: int) -> _Segment:
    path = pdir / _segment_name(base)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _O_CLOEXEC, 0o644)
    _fsync_dir(pdir)
    return _Segment(base, path, fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open_dir_and_lock(directory: Path) -> int:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BusError(
            f"data directory {directory}: cannot create it ({exc.strerror}); choose a writable --data"
        ) from exc
    if not directory.is_dir():
        raise BusError(f"data directory {directory}: exists but is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BusError(f"data directory {directory}: not writable by this user; fix its permissions or choose another")
    path = directory / "LOCK"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o644)
    except OSError as exc:
        raise BusError(f"cannot open the lock file {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise BusLockedError(
                f"data directory {directory} is in use by another ordertrail (pid {owner}, lock file {path}); "
                "stop it, or give this one another --data directory"
            ) from exc
        raise BusError(f"cannot lock {path}: {exc.strerror}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _mkdir(path: Path) -> None:
    if path.is_dir():
        return
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return
    except OSError as exc:
        raise BusError(f"cannot create {path}: {exc.strerror}") from exc
    _fsync_dir(path.parent)


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o644)
        try:
            _write_all(fd, json.dumps(doc, sort_keys=True).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise BusError(f"cannot write {path}: {exc.strerror}") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise BusError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise BusError(f"{path} is not valid JSON ({exc}); restore it or remove the data directory") from exc
    if not isinstance(doc, dict):
        raise BusError(f"{path} must hold a JSON object")
    return doc


def _check_name(what: str, name: str) -> None:
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise BusError(f"{what} {name!r}: use 1–200 of A-Z a-z 0-9 . _ -")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _mtime_ms(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns // 1_000_000
    except FileNotFoundError:
        return 0


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
