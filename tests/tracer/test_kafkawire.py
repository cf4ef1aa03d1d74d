"""``tracer.kafkawire`` and the consumer's fast path (``kafkabus._FastPartitionRecords``) against
kafka-python itself: batches built by kafka-python's own encoder (``MemoryRecordsBuilder``, with
the broker-side fields — base offset, leader epoch, log-append time, control batches — stamped
by hand and the CRC recomputed) and read back by kafka-python's own reader (``MemoryRecords`` and
``DefaultRecordBatch``), compared field by field with what ``parse_log`` makes of them; then
malformed, cut and mutated fetches, which must end in ``Parsed.error`` and never in an exception;
then kafka-python's ``PartitionRecords`` contract, which the fast path keeps. No broker: the
round trip through a real one is in test_kafkabus.py. Runs compiled (the default build) and as
pure Python (``ORDERTRAIL_PURE_PYTHON=1``)."""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import kafka.codec as codecs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record import MemoryRecords, MemoryRecordsBuilder
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c, encode_varint
from kafka.serializer import DefaultSerializer

from tracer.bus import Record
from tracer.kafkabus import KafkaSource, _crc32c, _decompress, _FastPartitionRecords, read_fast
from tracer.kafkawire import HEADER, Parsed, has_legacy, parse_log

TOPIC = "ordertrail.hops"
PART = 3
T = 1_795_000_000_000  # 2026-11-18T11:06:40.000Z
HEADER_STRUCT = DefaultRecordBatchBuilder.HEADER_STRUCT
NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
HAS = {GZIP: codecs.has_gzip, SNAPPY: codecs.has_snappy, LZ4: codecs.has_lz4, ZSTD: codecs.has_zstd}
CODECS = [NONE, *(codec for codec, has in HAS.items() if has())]  # what this .venv can read and write

# What the builder is given: (timestamp, key, value, headers), None where Kafka allows null.
In = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]
# A record as read, comparable across both readers: (offset, timestamp, key, value, headers).
Row = tuple[int, int, str, bytes, tuple[tuple[str, bytes], ...]]


# -- building fetches ------------------------------------------------------------------------------


def batch(records: Sequence[In], *, codec: int = NONE, base: int = 0, epoch: int = 0, gaps: int = 0) -> bytes:
    """One v2 batch of ``records`` as kafka-python's producer writes it, then placed at ``base``
    with leader epoch ``epoch`` as a broker would (neither is under the CRC). ``gaps`` offsets
    are skipped before each record after the first (a compacted batch)."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=codec, batch_size=1 << 30)
    for i, (ts, key, value, headers) in enumerate(records):
        if i and gaps:
            builder.skip(gaps)
        assert builder.append(ts, key, value, headers) is not None
    builder.close()
    buf = bytearray(builder.buffer())
    struct.pack_into(">q", buf, 0, base)
    struct.pack_into(">i", buf, 12, epoch)
    return bytes(buf)


def compressed(buf: bytes, codec: int) -> bytes:
    """``buf``, checked to be compressed with ``codec`` (kafka-python writes a batch uncompressed
    when compressing does not make it smaller)."""
    assert DefaultRecordBatch(buf).compression_type == codec
    return buf


def sealed(buf: bytes | bytearray) -> bytes:
    """``buf`` (one batch) with its CRC recomputed."""
    out = bytearray(buf)
    struct.pack_into(">I", out, 17, calc_crc32c(bytes(out[21:])))
    return bytes(out)


def stamped(buf: bytes, *, attrs: int = 0, max_ts: int | None = None) -> bytes:
    """A broker's changes to a batch: attribute bits set (log-append time, control) and the max
    timestamp (the append time), CRC recomputed."""
    out = bytearray(buf)
    struct.pack_into(">h", out, 21, struct.unpack_from(">h", out, 21)[0] | attrs)
    if max_ts is not None:
        struct.pack_into(">q", out, 35, max_ts)
    return sealed(out)


def control_batch(base: int, *, commit: bool = True, epoch: int = 0) -> bytes:
    """A transaction marker as a broker writes it: one control record, key (version, type)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=NONE,
        is_transactional=True,
        producer_id=7,
        producer_epoch=0,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    builder.append(0, T, struct.pack(">hh", 0, int(commit)), struct.pack(">hi", 0, 0), [])
    buf = bytearray(builder.build())
    struct.pack_into(">q", buf, 0, base)
    struct.pack_into(">i", buf, 12, epoch)
    return stamped(bytes(buf), attrs=DefaultRecordBatch.CONTROL_MASK)


def legacy_batch(magic: int, n: int = 3, base: int = 0) -> bytes:
    """``n`` records in an older format (magic 0 or 1): a message set, each message its own entry."""
    builder = MemoryRecordsBuilder(magic=magic, compression_type=NONE, batch_size=1 << 20, offset=base)
    for i in range(n):
        builder.append(T + i, f"old-{i}".encode(), b"a legacy message, longer than a v2 batch header", None)
    builder.close()
    return bytes(builder.buffer())


def varint(v: int) -> bytes:
    out = bytearray()
    encode_varint(v, out.append)
    return bytes(out)


def field(b: bytes | None) -> bytes:
    return varint(-1) if b is None else varint(len(b)) + b


def raw_record(
    delta: int, *, key: bytes | None = b"k", value: bytes | None = b"v", headers: bytes = b"\x00", lie: int = 0
) -> bytes:
    """One record written by hand, its length off by ``lie``; ``headers`` pre-encoded."""
    body = b"\x00" + varint(0) + varint(delta) + field(key) + field(value) + headers
    return varint(len(body) + lie) + body


def hand_batch(records: Sequence[bytes], *, base: int = 0, count: int | None = None) -> bytes:
    """A v2 batch around hand-written records (uncompressed), sealed with its CRC."""
    body = b"".join(records)
    n = len(records) if count is None else count
    head = HEADER_STRUCT.pack(base, HEADER - 12 + len(body), 0, 2, 0, 0, len(records) - 1, T, T, -1, -1, -1, n)
    return sealed(head + body)


def recs(n: int, *, start: int = 0) -> list[In]:
    """``n`` compressible records with keys, values and a header each."""
    return [
        (T + i, f"order-{start + i}".encode(), b'{"hop": "payment.authorized"}' * 2, [("n", b"%d" % i)])
        for i in range(n)
    ]


# -- reading both ways -----------------------------------------------------------------------------


def fast(buf: bytes, fetch_offset: int = 0, *, check_crcs: bool = True) -> Parsed:
    return parse_log(buf, fetch_offset, TOPIC, PART, check_crcs, _crc32c, _decompress)


def rows(records: Sequence[Record]) -> list[Row]:
    for r in records:
        assert (r.topic, r.partition) == (TOPIC, PART)
        assert type(r.value) is bytes and all(type(v) is bytes for _, v in r.headers)
    return [(r.offset, r.timestamp_ms, r.key, r.value, tuple(r.headers)) for r in records]


def kafka_reading(buf: bytes, fetch_offset: int = 0) -> tuple[list[Row], int]:
    """kafka-python's reading of ``buf`` as the consumer sees it (control batches and records
    before ``fetch_offset`` skipped), each record as ``KafkaSource`` makes it: key decoded ("" for
    null), value and header values b"" for null. Also the next offset after the last batch."""
    out: list[Row] = []
    next_offset = -1
    records = MemoryRecords(buf)
    while (b := records.next_batch()) is not None:
        assert isinstance(b, DefaultRecordBatch) and b.validate_crc()
        if not b.is_control_batch:
            out += [
                (
                    r.offset,
                    r.timestamp,
                    "" if r.key is None else r.key.decode("utf-8", "replace"),
                    b"" if r.value is None else r.value,
                    tuple((k, b"" if v is None else v) for k, v in r.headers),
                )
                for r in b
                if r.offset >= fetch_offset
            ]
        next_offset = b.next_offset
    return out, next_offset


def assert_reads_as_kafka_python(buf: bytes, fetch_offset: int = 0) -> Parsed:
    got = fast(buf, fetch_offset)
    want, next_offset = kafka_reading(buf, fetch_offset)
    assert got.error == ""
    assert rows(got.records) == want
    assert got.next_offset == next_offset
    assert got.bytes_read == len(buf)
    return got


# -- what kafka-python writes reads back the same ---------------------------------------------------


@pytest.mark.parametrize(
    "codec",
    [
        pytest.param(NONE, id="none"),
        pytest.param(GZIP, id="gzip"),
        pytest.param(LZ4, id="lz4"),
        pytest.param(
            SNAPPY,
            id="snappy",
            marks=pytest.mark.skipif(not codecs.has_snappy(), reason="python-snappy is not installed in .venv"),
        ),
        pytest.param(
            ZSTD,
            id="zstd",
            marks=pytest.mark.skipif(not codecs.has_zstd(), reason="zstandard is not installed in .venv"),
        ),
    ],
)
def test_a_batch_of_each_codec_reads_as_kafka_python_reads_it(codec: int) -> None:
    got = assert_reads_as_kafka_python(compressed(batch(recs(20), codec=codec, base=1000, epoch=4), codec))
    assert [r.offset for r in got.records] == list(range(1000, 1020))
    assert got.records[3].key == "order-3" and got.records[3].headers == [("n", b"3")]
    assert got.next_offset == 1020 and got.leader_epoch == 4


def test_several_batches_in_one_fetch_are_read_in_order_whatever_their_codecs() -> None:
    buf = b"".join(batch(recs(5, start=5 * i), codec=CODECS[i % len(CODECS)], base=5 * i) for i in range(6))
    got = assert_reads_as_kafka_python(buf)
    assert [r.offset for r in got.records] == list(range(30))
    assert [r.key for r in got.records] == [f"order-{i}" for i in range(30)]


def test_keys_values_and_headers_of_every_shape_read_as_kafka_python_reads_them() -> None:
    big = bytes(random.Random(7).randbytes(70_000))  # > 64 KiB: a three-byte length varint
    huge = b"x" * (1 << 21)  # a four-byte one
    shapes: list[In] = [
        (T, None, b"null key", []),
        (T, "ordre-é-東京-🚚".encode(), b"non-ASCII key", []),
        (T, b"\xff\xfe not UTF-8", b"a key that is not UTF-8 reads with replacement characters", []),
        (T, b"k", None, []),
        (T, b"k", b"", []),
        (T, b"", b"empty key", []),
        (T, b"k", big, []),
        (T, b"k", huge, [("big", big)]),
        (T, b"k", b"v", [("traceparent", b"00-abc-01"), ("tracestate", b"a=b"), ("baggage", b"k=v")]),
        (T, b"k", b"v", [("null", None), ("empty", b""), ("dup", b"1"), ("dup", b"2"), ("ключ", b"\x00\xff")]),
    ]
    for codec in CODECS:
        got = assert_reads_as_kafka_python(compressed(batch(shapes, codec=codec), codec))
        assert got.records[0].key == "" and got.records[3].value == b""
        assert got.records[1].key == "ordre-é-東京-🚚"
        assert got.records[7].value == huge and got.records[7].headers == [("big", big)]
        assert got.records[9].headers[0] == ("null", b"")


def test_timestamps_before_the_first_and_far_after_it_read_exactly() -> None:
    times = [T, T - 10_000, T + (1 << 40), 0, -1, T - (1 << 45), T + 1]
    got = assert_reads_as_kafka_python(batch([(t, b"k", b"v", []) for t in times]))
    assert [r.timestamp_ms for r in got.records] == times


@pytest.mark.parametrize("append_time", [T + 9_999, 0, -1])
def test_a_log_append_time_batch_gives_every_record_its_append_time(append_time: int) -> None:
    """The broker stamps the batch (attribute bit 3, the max timestamp); Kafka's readers take the
    max timestamp as every record's, whatever it holds — -1 (no timestamp) too."""
    buf = stamped(batch(recs(4), codec=LZ4), attrs=DefaultRecordBatch.TIMESTAMP_TYPE_MASK, max_ts=append_time)
    got = assert_reads_as_kafka_python(buf)
    assert [r.timestamp_ms for r in got.records] == [append_time] * 4


# -- where a fetch starts and ends -----------------------------------------------------------------


def test_a_fetch_from_the_middle_of_a_batch_skips_the_records_before_it() -> None:
    buf = batch(recs(10), base=0) + batch(recs(10, start=10), codec=LZ4, base=10)
    got = assert_reads_as_kafka_python(buf, fetch_offset=13)
    assert [r.offset for r in got.records] == list(range(13, 20))
    assert got.next_offset == 20


def test_a_whole_batch_before_the_fetch_offset_is_stepped_over() -> None:
    buf = batch(recs(10), base=0) + batch(recs(10, start=10), base=10)
    got = assert_reads_as_kafka_python(buf, fetch_offset=10)
    assert [r.offset for r in got.records] == list(range(10, 20))
    only_before = fast(batch(recs(10), base=0), 10)
    assert (only_before.records, only_before.next_offset, only_before.error) == ([], 10, "")


def test_a_fetch_offset_in_a_compacted_gap_starts_at_the_next_record_kept() -> None:
    buf = batch(recs(5), base=100, gaps=3)  # offsets 100, 104, 108, 112, 116
    got = assert_reads_as_kafka_python(buf, fetch_offset=105)
    assert [r.offset for r in got.records] == [108, 112, 116]
    assert got.next_offset == 117


def test_a_fetch_ending_inside_a_batch_reads_the_whole_ones_before_it_without_error() -> None:
    whole = batch(recs(5), base=0) + batch(recs(5, start=5), codec=GZIP, base=5)
    last = batch(recs(5, start=10), codec=LZ4, base=10)
    want, _ = kafka_reading(whole)
    for cut in range(len(last)):  # inside the offset, the length, the header, the records
        got = fast(whole + last[:cut])
        assert (rows(got.records), got.next_offset, got.bytes_read, got.error) == (want, 10, len(whole), ""), cut


def test_a_fetch_with_only_part_of_its_first_batch_reads_nothing_and_says_nothing() -> None:
    part = batch(recs(5), base=40)[:-1]
    got = fast(part, 40)
    assert (got.records, got.next_offset, got.bytes_read, got.error) == ([], -1, 0, "")


def test_an_empty_fetch_reads_nothing() -> None:
    got = fast(b"")
    assert (got.records, got.next_offset, got.leader_epoch, got.bytes_read, got.error) == ([], -1, -1, 0, "")


def test_a_control_batch_is_skipped_and_moves_the_next_offset_past_it() -> None:
    buf = batch(recs(5), base=0) + control_batch(5) + batch(recs(3, start=6), codec=LZ4, base=6)
    got = assert_reads_as_kafka_python(buf)
    assert [r.offset for r in got.records] == [0, 1, 2, 3, 4, 6, 7, 8]
    trailing = assert_reads_as_kafka_python(batch(recs(5), base=0) + control_batch(5, commit=False))
    assert [r.offset for r in trailing.records] == [0, 1, 2, 3, 4] and trailing.next_offset == 6


# -- malformed fetches: an error naming where, the batches before it kept --------------------------


GOOD = batch(recs(5), base=0)
GOOD_ROWS = kafka_reading(GOOD)[0]


def flipped(buf: bytes, at: int, mask: int = 0xFF) -> bytes:
    out = bytearray(buf)
    out[at] ^= mask
    return bytes(out)


def assert_kept_then(got: Parsed, error: str) -> None:
    """The first (good) batch read, the bad one dropped whole, and the error said."""
    assert rows(got.records) == GOOD_ROWS
    assert got.next_offset == 5 and got.bytes_read == len(GOOD)
    assert error in got.error, got.error


def test_a_flipped_byte_fails_the_crc_check_and_the_batch_is_dropped_whole() -> None:
    bad = batch(recs(5, start=5), base=5)
    got = fast(GOOD + flipped(bad, len(bad) - 3))
    assert_kept_then(got, f"batch at offset 5 for partition {PART} failed its CRC check")
    unchecked = fast(GOOD + flipped(bad, len(bad) - 3), check_crcs=False)  # read as it is, flipped byte and all
    assert unchecked.error == "" and [r.offset for r in unchecked.records] == list(range(10))
    assert unchecked.records[9].headers != [("n", b"4")]


def test_every_flipped_byte_of_a_batch_is_caught_or_read_never_raised() -> None:
    """Over every byte of the second batch and three masks: with CRCs checked, a flip anywhere the
    CRC covers is refused; with them unchecked, the reading ends in records or an error. Either
    way the first batch is kept, and nothing escapes."""
    for codec in (NONE, LZ4):
        bad = batch(recs(4, start=5), codec=codec, base=5)
        for at in range(len(bad)):
            for mask in (0x01, 0x80, 0xFF):
                buf = GOOD + flipped(bad, at, mask)
                checked, unchecked = fast(buf), fast(buf, check_crcs=False)
                for got in (checked, unchecked):
                    assert rows(got.records)[:5] == GOOD_ROWS, (codec, at, mask, got.error)
                if at >= 21:  # attributes onwards: under the CRC
                    assert_kept_then(checked, "failed its CRC check")


def test_a_record_whose_length_lies_is_refused_naming_its_offset() -> None:
    for lie in (1, -1):
        bad = hand_batch([raw_record(0), raw_record(1, lie=lie), raw_record(2)], base=5)
        assert_kept_then(fast(GOOD + bad), "record at offset 6: ")
        assert "its length says" in fast(GOOD + bad).error


def test_a_negative_header_count_is_refused_naming_the_record() -> None:
    bad = hand_batch([raw_record(0), raw_record(1, headers=varint(-1))], base=5)
    assert_kept_then(fast(GOOD + bad), f"batch at offset 5 for partition {PART}: record at offset 6: header count -1")


def test_a_negative_header_key_length_is_refused() -> None:
    bad = hand_batch([raw_record(0, headers=varint(1) + varint(-1) + field(b"v"))], base=5)
    assert_kept_then(fast(GOOD + bad), "record at offset 5: header key length -1 is negative")


@pytest.mark.parametrize("length", [HEADER - 13, 10, 0, -1, -(1 << 31)])
def test_a_batch_length_shorter_than_a_header_is_refused(length: int) -> None:
    bad = bytearray(batch(recs(3), base=5))
    struct.pack_into(">i", bad, 8, length)  # not under the CRC
    assert_kept_then(fast(GOOD + bytes(bad)), f"batch at offset 5: length {length} is shorter than a batch header")


@pytest.mark.parametrize(
    ("count", "error"),
    [
        (4, "a varint runs past the end of the batch"),
        (2, "bytes left after the batch's 2 records"),
        (-1, "record count -1 is negative"),
    ],
)
def test_a_record_count_that_is_not_the_records_is_refused(count: int, error: str) -> None:
    bad = hand_batch([raw_record(0), raw_record(1), raw_record(2)], base=5, count=count)
    assert_kept_then(fast(GOOD + bad), error)


@pytest.mark.parametrize("size", [(1 << 63) - 1, (1 << 63) - 5, 1 << 62, 1 << 31, 1000])
def test_a_key_longer_than_the_batch_is_refused_not_read_past(size: int) -> None:
    """Lengths near 2**63: the bound check must not overflow a native int (compiled)."""
    body = b"\x00" + varint(0) + varint(0) + varint(size) + b"abcdefgh" * 4  # a key of `size` bytes, 32 there
    bad = hand_batch([varint(len(body)) + body], base=5)
    assert_kept_then(fast(GOOD + bad), f"a field of {size} bytes runs past the end of the batch")


def test_a_varint_longer_than_64_bits_is_refused() -> None:
    body = b"\x00" + b"\xff" * 9 + b"\x7f" + varint(0) + field(None) + field(None) + varint(0)
    bad = hand_batch([varint(len(body)) + body], base=5)
    assert_kept_then(fast(GOOD + bad), "a varint longer than 64 bits")


def test_a_batch_that_cannot_be_decompressed_is_refused_naming_its_codec() -> None:
    bad = bytearray(batch(recs(5, start=5), codec=LZ4, base=5))
    bad[HEADER + 2 : HEADER + 12] = b"\x00" * 10
    assert_kept_then(fast(GOOD + sealed(bad)), "batch at offset 5: cannot decompress (codec 3)")
    unknown = stamped(batch(recs(3, start=5), base=5), attrs=5)
    assert_kept_then(fast(GOOD + unknown), "cannot decompress (codec 5)")
    assert "unknown compression codec 5" in fast(GOOD + unknown).error


def test_a_legacy_batch_handed_to_the_v2_reader_is_refused_naming_its_magic() -> None:
    assert_kept_then(fast(GOOD + legacy_batch(1, base=5)), "batch at offset 5: magic 1, this reader takes 2")


@pytest.mark.parametrize(
    "garbage",
    [b"garbage", b"\x00" * 100, b"\xff" * 100, random.Random(1).randbytes(1000), random.Random(2).randbytes(70)],
)
def test_garbage_reads_as_nothing_or_an_error_never_an_exception(garbage: bytes) -> None:
    for check_crcs in (True, False):
        got = fast(garbage, check_crcs=check_crcs)
        assert got.records == [] and isinstance(got.error, str)
        after = fast(GOOD + garbage, check_crcs=check_crcs)
        assert rows(after.records) == GOOD_ROWS
    assert "length 0 is shorter than a batch header" in fast(b"\x00" * 100).error
    assert "length -1 is shorter than a batch header" in fast(b"\xff" * 100).error


# -- properties ------------------------------------------------------------------------------------

_headers = st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=16)), max_size=3)
_key = st.none() | st.text(max_size=12).map(str.encode) | st.binary(max_size=6)
_record = st.tuples(st.integers(-(1 << 44), 1 << 44), _key, st.none() | st.binary(max_size=200), _headers)
_batch = st.tuples(
    st.lists(_record, min_size=1, max_size=6),
    st.sampled_from(CODECS),
    st.integers(0, 2),  # offsets skipped between records (compaction)
    st.none() | st.integers(-1, 1 << 45),  # log-append time
    st.integers(0, 3),  # offsets missing before the batch
)


def build(batches: Sequence[tuple[list[In], int, int, int | None, int]]) -> tuple[bytes, list[int]]:
    """The fetch of ``batches`` and where each batch ends in it."""
    out, ends, base = b"", [], 0
    for records, codec, gaps, append_time, before in batches:
        one = batch(records, codec=codec, base=base + before, gaps=gaps)
        if append_time is not None:
            one = stamped(one, attrs=DefaultRecordBatch.TIMESTAMP_TYPE_MASK, max_ts=append_time)
        base = DefaultRecordBatch(one).next_offset
        out += one
        ends.append(len(out))
    return out, ends


@settings(max_examples=150, deadline=None)
@given(st.lists(_batch, min_size=1, max_size=4), st.integers(0, 40))
def test_any_records_kafka_python_writes_read_back_as_kafka_python_reads_them(
    batches: list[tuple[list[In], int, int, int | None, int]], fetch_offset: int
) -> None:
    buf, _ = build(batches)
    assert_reads_as_kafka_python(buf, fetch_offset)


_damage = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
        st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(0)),
        st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 8)),
        st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.integers(0, 255)),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_batch, min_size=1, max_size=3), _damage, st.booleans())
def test_a_damaged_fetch_never_raises_and_keeps_the_batches_before_the_damage(
    batches: list[tuple[list[In], int, int, int | None, int]], damage: list[tuple[str, int, int]], check_crcs: bool
) -> None:
    buf, ends = build(batches)
    out = bytearray(buf)
    first = len(buf)
    for op, at, arg in damage:
        at %= len(out) + 1
        first = min(first, at)
        if op == "flip" and at < len(out):
            out[at] ^= arg
        elif op == "cut":
            del out[at:]
        elif op == "delete":
            del out[at : at + arg]
        elif op == "insert":
            out[at:at] = bytes([arg])
    got = fast(bytes(out), check_crcs=check_crcs)  # must not raise
    assert isinstance(got, Parsed) and isinstance(got.error, str)
    assert all(type(r) is Record for r in got.records)
    intact = buf[: max((e for e in ends if e <= first), default=0)]
    kept = kafka_reading(intact)[0]
    assert rows(got.records)[: len(kept)] == kept


# -- has_legacy ------------------------------------------------------------------------------------


def test_a_fetch_with_a_batch_in_an_older_format_is_told_apart() -> None:
    assert has_legacy(legacy_batch(1))
    assert has_legacy(legacy_batch(0))
    assert has_legacy(GOOD + legacy_batch(1, base=5))
    assert has_legacy(legacy_batch(1) + GOOD)
    assert not has_legacy(GOOD + batch(recs(5, start=5), codec=LZ4, base=5) + control_batch(10))
    assert not has_legacy(b"")
    assert not has_legacy(GOOD + legacy_batch(1, n=1, base=5)[:-1])  # only whole batches count


# -- _FastPartitionRecords: kafka-python's PartitionRecords contract -------------------------------


def partition_records(cls: type[Any], buf: bytes, fetch_offset: int = 0, **config: Any) -> tuple[Any, list[Any]]:
    """``cls`` over a fetch of ``buf``, made as ``Fetcher._parse_fetched_data`` makes it; also the
    list ``on_drain`` appends to."""
    drained: list[Any] = []
    kwargs = {
        "key_deserializer": None,
        "value_deserializer": None,
        "check_crcs": True,
        "isolation_level": IsolationLevel.READ_UNCOMMITTED,
        "aborted_transactions": None,
        "metric_aggregator": None,
        "on_drain": drained.append,
        **config,
    }
    return cls(fetch_offset, TopicPartition(TOPIC, PART), MemoryRecords(buf), **kwargs), drained


FETCH = (
    batch(recs(5), codec=LZ4, base=0, epoch=9) + batch(recs(5, start=5), base=5, epoch=9) + control_batch(10, epoch=9)
)


@pytest.mark.parametrize("cls", [Fetcher.PartitionRecords, _FastPartitionRecords], ids=["kafka-python", "fast"])
def test_take_in_pieces_returns_every_record_and_moves_the_fetch_offset_as_kafka_python_does(cls: type[Any]) -> None:
    part, drained = partition_records(cls, FETCH, fetch_offset=2)
    trail = []
    while part:
        got = part.take(3)
        trail.append(([r.offset for r in got], part.next_fetch_offset))
    assert trail == [([2, 3, 4], 5), ([5, 6, 7], 8), ([8, 9], 11)]  # past the trailing control batch
    assert drained == [part] and part.leader_epoch == 9


def test_the_fast_path_reads_records_and_is_drained_as_soon_as_they_are_used_up() -> None:
    part, drained = partition_records(_FastPartitionRecords, FETCH)
    got = part.take(10)
    assert all(type(r) is Record for r in got)
    assert rows(got) == kafka_reading(FETCH)[0]
    assert part.next_fetch_offset == 11 and not part and drained == [part]
    assert (part.records_read, part.bytes_read) == (10, len(FETCH))


def test_a_fetch_of_control_batches_only_moves_the_fetch_offset_past_them() -> None:
    part, drained = partition_records(_FastPartitionRecords, control_batch(10) + control_batch(11), fetch_offset=10)
    assert part.take(5) == []
    assert part.next_fetch_offset == 12 and not part and drained == [part]


def test_a_corrupt_second_batch_ends_the_fetch_after_the_records_of_the_first() -> None:
    buf = GOOD + flipped(batch(recs(5, start=5), base=5), -3)
    part, drained = partition_records(_FastPartitionRecords, buf)
    assert [r.offset for r in part.take(3)] == [0, 1, 2]
    assert [r.offset for r in part.take(3)] == [3, 4]
    assert part.next_fetch_offset == 5
    with pytest.raises(CorruptRecordError, match=f"batch at offset 5 for partition {PART} failed its CRC check"):
        part.take(3)
    assert part.take(3) == [] and not part and drained == [part]
    assert part.next_fetch_offset == 5  # the next fetch starts at the bad batch again, as Kafka's consumer does


def test_a_corrupt_first_batch_raises_at_the_first_take() -> None:
    part, _ = partition_records(_FastPartitionRecords, flipped(GOOD, -3) + batch(recs(5, start=5), base=5))
    with pytest.raises(CorruptRecordError, match="batch at offset 0 for partition 3 failed its CRC check"):
        part.take(100)
    assert part.next_fetch_offset == 0


@pytest.mark.parametrize(
    ("buf", "config"),
    [
        (legacy_batch(1, n=4), {}),
        (legacy_batch(0, n=4), {}),
        (legacy_batch(1, n=2) + batch(recs(2), base=2), {}),
        (batch(recs(4)), {"isolation_level": IsolationLevel.READ_COMMITTED}),
        (batch(recs(4)), {"key_deserializer": DefaultSerializer()}),
    ],
    ids=["magic-1", "magic-0", "magic-1-then-2", "read-committed", "deserializer"],
)
def test_what_the_fast_path_does_not_take_is_read_by_kafka_python(buf: bytes, config: dict[str, Any]) -> None:
    part, drained = partition_records(_FastPartitionRecords, buf, **config)
    got = part.take(100)
    assert [type(r) for r in got] == [ConsumerRecord] * 4
    assert [r.offset for r in got] == [0, 1, 2, 3]
    assert not part and drained == [part]


def test_read_fast_puts_the_fast_path_where_kafka_python_makes_its_partition_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(PartitionRecords=Fetcher.PartitionRecords))
    assert read_fast(consumer) and consumer._fetcher.PartitionRecords is _FastPartitionRecords
    assert not read_fast(SimpleNamespace())  # a kafka-python without that place: its own reading kept
    assert "records are read by kafka-python (slower)" in caplog.text


# -- KafkaSource.poll over either reading ----------------------------------------------------------


class StubConsumer:
    """What ``KafkaSource`` needs of a KafkaConsumer: one partition assigned, then the fetches."""

    def __init__(self, fetches: list[list[Any]]) -> None:
        self.fetches = fetches
        self.listener: Any = None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        tp = TopicPartition(TOPIC, PART)
        self.listener.on_partitions_assigned([tp])
        return {tp: self.fetches.pop(0)} if self.fetches else {}

    def highwater(self, tp: TopicPartition) -> int:
        return 20


def test_the_source_yields_the_same_records_from_kafka_pythons_reading_and_from_the_fast_one() -> None:
    shapes: list[In] = [
        (T, None, None, [("null", None), ("traceparent", b"00-x")]),
        (T + 1, "ordre-é".encode(), b"{}" * 100, []),
        (T - 5, b"k", b"", [("empty", b"")]),
    ]
    buf = batch(shapes, codec=LZ4, base=7) + control_batch(10)
    slow = partition_records(Fetcher.PartitionRecords, buf, fetch_offset=7)[0].take(100)
    quick = partition_records(_FastPartitionRecords, buf, fetch_offset=7)[0].take(100)
    assert type(slow[0]) is ConsumerRecord and type(quick[0]) is Record
    read = []
    for fetch in (slow, quick):
        source = KafkaSource(StubConsumer([fetch]), TOPIC)
        read.append(source.poll(100, 0.1))
        assert source.lag() == {PART: 20 - 10}
    assert read[0] == read[1]
    assert rows(read[0]) == kafka_reading(buf)[0]
    assert read[0][0].headers == [("null", b""), ("traceparent", b"00-x")]


def test_the_source_reads_a_poll_mixing_both_readings_of_a_partition() -> None:
    """kafka-python hands a partition's records over from one fetch at a time, but nothing in
    ``KafkaSource.poll`` relies on it: a list mixing both readings still gives every Record."""
    shapes: list[In] = [(T, b"k", b"v1", []), (T + 1, b"k", b"v2", [("h", None)]), (T + 2, None, b"v3", [])]
    buf = batch(shapes, codec=LZ4, base=7)
    slow = partition_records(Fetcher.PartitionRecords, buf, fetch_offset=7)[0].take(100)
    quick = partition_records(_FastPartitionRecords, buf, fetch_offset=7)[0].take(100)
    for mixed in ([quick[0], slow[1], quick[2]], [slow[0], quick[1], slow[2]], [quick[0], quick[1], slow[2]]):
        got = KafkaSource(StubConsumer([mixed]), TOPIC).poll(100, 0.1)
        assert all(type(r) is Record for r in got)
        assert got == quick
