"""Kafka's record batches (log format v2, magic 2) read straight into ``tracer.bus.Record``.

kafka-python reads a fetched partition record by record in Python: a ``DefaultRecord`` and a
``ConsumerRecord`` a record, each varint a function call: most of what a consumer loop costs
(docs/kafka.md, "Reading records"; docs/benchmarks.md, kafka). ``parse_log``
does the same reading compiled (``tracer.native``): the batches of one fetched partition, each
checked (CRC-32C over the batch, as kafka-python's ``check_crcs``), decompressed with
kafka-python's own codecs, its records read into ``Record``s.

The format (https://kafka.apache.org/documentation/#recordbatch): a batch is a 61-byte header
(base offset, length, leader epoch, magic, CRC, attributes, last offset delta, first and max
timestamps, producer id and epoch, base sequence, record count) then its records, compressed
together when the attributes say so; a record is a varint length, an int8 of attributes, then
varints and byte strings (timestamp delta, offset delta, key, value, headers). Varints are
zigzag-encoded.

What it leaves to kafka-python: the older formats (magic 0 and 1, from brokers before 0.11) and
reading only committed transactions; ``has_legacy`` says when a fetch has the former, and
``tracer.kafkabus`` reads such a fetch the slow way. Control batches (transaction markers) are
skipped, as kafka-python does when reading uncommitted. Anything malformed ends the reading
where it is met: the records before it are kept and ``Parsed.error`` says what was wrong, at
which offset; a record cut off at the end of a fetch (the broker sends whole batches, but a
fetch can end inside one) is not an error, it is read by the next fetch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from mypy_extensions import i64

from tracer.bus import Record

HEADER: Final = 61  # bytes of a v2 batch header
_MAGIC_AT: Final = 16
_CRC_AT: Final = 17
_ATTRS_AT: Final = 21  # the CRC covers from here to the end of the batch
_CODEC_MASK: Final = 0x07
_LOG_APPEND_TIME: Final = 0x08
_CONTROL: Final = 0x20
_TWO32: Final = 4_294_967_296  # literals: mypyc folds i64(1) << 32 into a C int shift that overflows
_TWO31: Final = 2_147_483_648


class Parsed:
    """What ``parse_log`` read from one fetched partition."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.next_offset: i64 = -1  # the offset after the last whole batch read (-1: none)
        self.leader_epoch: i64 = -1
        self.bytes_read: i64 = 0
        self.error = ""  # what was malformed, and where; "" when everything read


def _u32(b: bytes, at: i64) -> i64:
    return (i64(b[at]) << 24) | (i64(b[at + 1]) << 16) | (i64(b[at + 2]) << 8) | i64(b[at + 3])


def _i32(b: bytes, at: i64) -> i64:
    v = _u32(b, at)
    return v - _TWO32 if v >= _TWO31 else v


def _i64(b: bytes, at: i64) -> i64:
    hi = _u32(b, at)
    lo = _u32(b, at + 4)
    if hi >= _TWO31:
        hi -= _TWO32
    return (hi << 32) | lo


def _i16(b: bytes, at: i64) -> i64:
    v = (i64(b[at]) << 8) | i64(b[at + 1])
    return v - 65536 if v >= 32768 else v


class _Reader:
    """A cursor over a batch's records, reading zigzag varints."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos: i64 = 0
        self.end: i64 = len(data)

    def varint(self) -> i64:
        data = self.data
        pos = self.pos
        shift: i64 = 0
        raw: i64 = 0
        while True:
            if pos >= self.end:
                raise ValueError("a varint runs past the end of the batch")
            b = i64(data[pos])
            pos += 1
            if shift == 63:
                # the tenth byte carries the top bit only (a 64-bit zigzag value)
                if b > 1:
                    raise ValueError("a varint longer than 64 bits")
                raw |= b << 63
                break
            raw |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        self.pos = pos
        # zigzag: 0, -1, 1, -2 ... as 0, 1, 2, 3 ...; (raw >> 1) must not sign-extend
        return ((raw >> 1) & 0x7FFF_FFFF_FFFF_FFFF) ^ -(raw & 1)

    def take(self, n: i64) -> bytes:
        pos = self.pos
        if n < 0 or n > self.end - pos:  # not pos + n: near 2**63 it wraps (a native int, compiled)
            raise ValueError(f"a field of {n} bytes runs past the end of the batch")
        self.pos = pos + n
        return self.data[pos : pos + n]


def has_legacy(buf: bytes) -> bool:
    """Whether any whole batch of the fetched ``buf`` is in an older format (magic 0 or 1)."""
    pos: i64 = 0
    size: i64 = len(buf)
    while pos + _MAGIC_AT < size:
        length = _i32(buf, pos + 8)
        if length < 0 or pos + 12 + length > size:
            break
        if i64(buf[pos + _MAGIC_AT]) < 2:
            return True
        pos += 12 + length
    return False


def parse_log(
    buf: bytes,
    fetch_offset: i64,
    topic: str,
    partition: int,
    check_crcs: bool,
    crc32c: Callable[[bytes], int],
    decompress: Callable[[int, bytes], bytes],
) -> Parsed:
    """The records of the v2 batches in ``buf`` (one partition's fetched data) from
    ``fetch_offset`` on. ``crc32c`` checksums a batch's bytes; ``decompress(codec, data)``
    returns a compressed batch's records (codec 1–4, the attributes' low bits)."""
    out = Parsed()
    records = out.records
    pos: i64 = 0
    size: i64 = len(buf)
    while pos + HEADER <= size:
        base = _i64(buf, pos)
        length = _i32(buf, pos + 8)
        end = pos + 12 + length
        if length < HEADER - 12:
            out.error = f"batch at offset {base}: length {length} is shorter than a batch header"
            return out
        if end > size:
            break  # the fetch ended inside this batch: the next fetch reads it whole
        magic = i64(buf[pos + _MAGIC_AT])
        if magic != 2:
            out.error = f"batch at offset {base}: magic {magic}, this reader takes 2 (Kafka 0.11 and later)"
            return out
        if check_crcs:
            want = _u32(buf, pos + _CRC_AT)
            got = i64(crc32c(buf[pos + _ATTRS_AT : end]))
            if want != got:
                out.error = f"batch at offset {base} for partition {partition} failed its CRC check"
                return out
        attrs = _i16(buf, pos + _ATTRS_AT)
        next_offset = base + _i32(buf, pos + 23) + 1
        out.leader_epoch = _i32(buf, pos + 12)
        if attrs & _CONTROL or next_offset <= fetch_offset:
            out.next_offset = next_offset
            out.bytes_read += end - pos
            pos = end
            continue
        first_ts = _i64(buf, pos + 27)
        log_append = (attrs & _LOG_APPEND_TIME) != 0  # every record's time is the batch's max timestamp
        max_ts = _i64(buf, pos + 35)
        count = _i32(buf, pos + 57)
        codec = attrs & _CODEC_MASK
        body = buf[pos + HEADER : end]
        if codec:
            try:
                body = decompress(int(codec), body)
            except Exception as exc:
                out.error = f"batch at offset {base}: cannot decompress (codec {codec}): {exc!r}"
                return out
        kept = len(records)
        try:
            _records(_Reader(body), count, base, first_ts, log_append, max_ts, fetch_offset, topic, partition, records)
        except ValueError as exc:
            del records[kept:]  # a batch is taken whole or not at all
            out.error = f"batch at offset {base} for partition {partition}: {exc}"
            return out
        out.next_offset = next_offset
        out.bytes_read += end - pos
        pos = end
    return out


def _records(
    r: _Reader,
    count: i64,
    base: i64,
    first_ts: i64,
    log_append: bool,
    max_ts: i64,
    fetch_offset: i64,
    topic: str,
    partition: int,
    out: list[Record],
) -> None:
    if count < 0:
        raise ValueError(f"record count {count} is negative")
    for _ in range(count):
        length = r.varint()
        start = r.pos
        r.pos += 1  # the record's attributes (int8): unused by the format so far
        ts_delta = r.varint()
        offset = base + r.varint()
        n = r.varint()
        key = "" if n < 0 else r.take(n).decode("utf-8", "replace")
        n = r.varint()
        value = b"" if n < 0 else r.take(n)
        n = r.varint()
        if n < 0:
            raise ValueError(f"record at offset {offset}: header count {n} is negative")
        headers: list[tuple[str, bytes]] = []
        for _h in range(n):
            kn = r.varint()
            if kn < 0:
                raise ValueError(f"record at offset {offset}: header key length {kn} is negative")
            hkey = r.take(kn).decode("utf-8", "replace")
            vn = r.varint()
            headers.append((hkey, b"" if vn < 0 else r.take(vn)))
        if r.pos - start != length:
            raise ValueError(f"record at offset {offset}: {r.pos - start} bytes read, its length says {length}")
        if offset < fetch_offset:
            continue  # before where this fetch was asked to start (a batch is sent whole)
        out.append(
            Record(
                topic,
                partition,
                offset,
                max_ts if log_append else first_ts + ts_delta,
                key,
                value,
                headers if headers else (),
            )
        )
    if r.pos != r.end:
        raise ValueError(f"{r.end - r.pos} bytes left after the batch's {count} records")


def all_records(items: list[object]) -> bool:
    """Whether every item is a ``Record`` (read by ``parse_log``), not kafka-python's record: a
    few nanoseconds an item, compiled."""
    return all(type(item) is Record for item in items)  # mypyc compiles all() over a generator as a loop
