"""The embedded log's own promises: durable across reopen and kill -9, torn tails cut, corruption
skipped and counted, segments rolled and retained, one owner per directory, thread-safe producing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracer.bus import DEADLETTER_TOPIC, HOPS_TOPIC, BusError, BusLockedError, Message, Record
from tracer.clock import ManualClock
from tracer.localbus import LocalBus, TopicConfig

ONE = {HOPS_TOPIC: TopicConfig(partitions=1)}


def drain(bus: LocalBus, group: str = "check", topic: str = HOPS_TOPIC) -> list[Record]:
    consumer = bus.consumer(topic, group)
    out: list[Record] = []
    while batch := consumer.poll(10_000, 0.0):
        out.extend(batch)
    consumer.close()
    return out


def segments(root: Path, partition: int = 0) -> list[Path]:
    return sorted((root / "topics" / HOPS_TOPIC / str(partition)).glob("*.log"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "bus"


@pytest.fixture
def bus(root: Path) -> Iterator[LocalBus]:
    opened = LocalBus(root, ONE)
    yield opened
    opened.close()


def test_records_and_committed_positions_survive_close_and_reopen(root: Path) -> None:
    with LocalBus(root) as bus:
        bus.produce_batch(HOPS_TOPIC, [Message(f"o{i}", f"v{i}".encode()) for i in range(100)])
        consumer = bus.consumer(HOPS_TOPIC, "tracer")
        consumer.poll(100, 0.0)
        consumer.commit(consumer.position())
        consumer.close()
    with LocalBus(root) as bus:
        assert sorted(r.value for r in drain(bus)) == sorted(f"v{i}".encode() for i in range(100))
        assert sum(bus.committed(HOPS_TOPIC, "tracer").values()) == 100
        assert bus.consumer(HOPS_TOPIC, "tracer").poll(10, 0.0) == []


def test_appends_after_reopen_continue_the_offsets(root: Path) -> None:
    with LocalBus(root, ONE) as bus:
        bus.produce_batch(HOPS_TOPIC, [Message("k", b"a"), Message("k", b"b")])
    with LocalBus(root, ONE) as bus:
        assert bus.produce_batch(HOPS_TOPIC, [Message("k", b"c")]) == [(0, 2)]
        assert [(r.offset, r.value) for r in drain(bus)] == [(0, b"a"), (1, b"b"), (2, b"c")]


def test_a_second_open_of_the_same_directory_fails_while_the_first_holds_it(root: Path) -> None:
    with LocalBus(root, ONE):
        with pytest.raises(BusLockedError, match=f"in use by another ordertrail \\(pid {os.getpid()}"):
            LocalBus(root, ONE)
        child = subprocess.run(
            [sys.executable, "-c", f"from tracer.localbus import LocalBus; LocalBus({str(root)!r})"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode != 0 and "BusLockedError" in child.stderr and "--data" in child.stderr
    LocalBus(root, ONE).close()  # free again once closed


def test_a_data_directory_that_is_a_file_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(BusError, match=r"file.*(not a directory|cannot create)"):
        LocalBus(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_data_directory_is_refused_clearly(tmp_path: Path) -> None:
    tmp_path.joinpath("ro").mkdir(mode=0o500)
    with pytest.raises(BusError, match="not writable"):
        LocalBus(tmp_path / "ro")


def test_reopening_with_another_partition_count_is_refused(root: Path) -> None:
    LocalBus(root, ONE).close()
    with pytest.raises(BusError, match=r"has 1 partitions.*not 8"):
        LocalBus(root, {HOPS_TOPIC: TopicConfig(partitions=8)})


def test_topics_found_on_disk_are_opened_as_they_were_created(root: Path) -> None:
    LocalBus(root, {"extra": TopicConfig(partitions=3)}).close()
    with LocalBus(root, ONE) as bus:
        assert bus.partitions("extra") == [0, 1, 2]


def test_an_oversized_record_fails_the_whole_batch_before_anything_is_written(bus: LocalBus) -> None:
    with pytest.raises(BusError, match=r"message 1 .*allows at most"):
        bus.produce_batch(HOPS_TOPIC, [Message("k", b"ok"), Message("k", b"x" * (2 << 20))])
    assert bus.end_offsets(HOPS_TOPIC) == {0: 0}


def test_a_second_consumer_of_the_same_group_is_refused(bus: LocalBus) -> None:
    first = bus.consumer(HOPS_TOPIC, "g")
    with pytest.raises(BusError, match="already has an open consumer"):
        bus.consumer(HOPS_TOPIC, "g")
    first.close()
    bus.consumer(HOPS_TOPIC, "g").close()


def test_seek_rereads_from_an_offset_and_seek_to_committed_goes_back(bus: LocalBus) -> None:
    bus.produce_batch(HOPS_TOPIC, [Message("k", str(i).encode()) for i in range(10)])
    consumer = bus.consumer(HOPS_TOPIC, "g")
    consumer.poll(4, 0.0)
    consumer.commit({0: 4})
    consumer.seek(0, 8)
    assert [r.value for r in consumer.poll(10, 0.0)] == [b"8", b"9"]
    consumer.seek_to_committed()
    assert [r.offset for r in consumer.poll(2, 0.0)] == [4, 5]
    consumer.close()


def test_many_producer_threads_lose_nothing_and_keep_each_keys_order(root: Path) -> None:
    with LocalBus(root, {HOPS_TOPIC: TopicConfig(partitions=4, segment_bytes=8192)}) as bus:

        def produce(thread: int) -> None:
            for batch in range(10):
                bus.produce_batch(HOPS_TOPIC, [Message(f"t{thread}-k{k}", f"{batch}".encode()) for k in range(20)])

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = drain(bus)
    assert len(records) == 6 * 10 * 20
    by_key: dict[str, list[int]] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(int(r.value))
    assert all(values == list(range(10)) for values in by_key.values())


# --- crashes and damage ---------------------------------------------------------------------------


def test_a_torn_last_frame_is_cut_and_the_log_goes_on_from_the_last_whole_record(root: Path) -> None:
    with LocalBus(root, ONE) as bus:
        bus.produce_batch(HOPS_TOPIC, [Message("k", b"first"), Message("k", b"second")])
    (segment,) = segments(root)
    whole = segment.read_bytes()
    segment.write_bytes(whole + whole[: len(whole) // 2 - 3])  # half a frame more, as a crash leaves it
    with LocalBus(root, ONE) as bus:
        assert bus.stats.torn_tails == 1 and bus.stats.torn_bytes == len(whole) // 2 - 3
        assert segment.stat().st_size == len(whole)
        assert bus.produce_batch(HOPS_TOPIC, [Message("k", b"third")]) == [(0, 2)]
        assert [r.value for r in drain(bus)] == [b"first", b"second", b"third"]


def test_a_corrupt_frame_in_the_middle_is_skipped_counted_and_the_rest_is_read(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with LocalBus(root, ONE) as bus:
        bus.produce_batch(HOPS_TOPIC, [Message("k", f"value-{i:03d}".encode()) for i in range(5)])
    (segment,) = segments(root)
    data = bytearray(segment.read_bytes())
    at = data.index(b"value-002")
    data[at : at + 5] = b"XXXXX"  # flip bytes inside the third record
    segment.write_bytes(bytes(data))
    with LocalBus(root, ONE) as bus:
        values = [r.value for r in drain(bus)]
        assert values == [b"value-000", b"value-001", b"value-003", b"value-004"]
        assert bus.stats.corrupt_regions == 1 and bus.stats.lost_records == 1
    assert "unreadable bytes" in caplog.text


def test_a_garbage_length_in_a_sealed_segment_skips_only_that_record(root: Path) -> None:
    with LocalBus(root, SMALL) as bus:
        fill(bus, 30)
    first = segments(root)[0]
    data = bytearray(first.read_bytes())
    size = 8 + 20 + 1 + 300  # length and CRC, offset/time/sizes, key "k", value
    victim = len(data) // size // 2
    data[victim * size : victim * size + 4] = b"\xff\xff\xff\x7f"
    first.write_bytes(bytes(data))
    with LocalBus(root, SMALL) as bus:
        offsets = [r.offset for r in drain(bus)]
        assert offsets == [o for o in range(30) if o != victim]
        assert bus.stats.lost_records == 1


WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    from tracer.bus import HOPS_TOPIC, Message
    from tracer.localbus import LocalBus, TopicConfig

    root, seq, tear_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    real_write, writes = os.write, 0

    def write(fd, data):  # fault injection: stop inside a write (its last frame incomplete) and await the kill
        global writes
        writes += 1
        if 0 < tear_after < writes:
            real_write(fd, data[:-5])
            print("tearing", flush=True)
            time.sleep(60)
        return real_write(fd, data)

    os.write = write
    bus = LocalBus(root, {HOPS_TOPIC: TopicConfig(partitions=4, segment_bytes=256 << 10)})
    print("open", flush=True)
    while True:
        batch = [Message(f"order-{(seq + i) % 53}", json.dumps({"seq": seq + i}).encode() + b" " * 200)
                 for i in range(500)]
        acks = bus.produce_batch(HOPS_TOPIC, batch)
        print(json.dumps([[p, o, seq + i] for i, (p, o) in enumerate(acks)]), flush=True)
        seq += len(batch)
    """
)


def run_writer_and_kill(root: Path, seq: int, tear_after: int, delay: float) -> list[bytes]:
    """Start a writer, kill -9 it (mid-write when ``tear_after``, else after ``delay``); its output lines."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(seq), str(tear_after)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    lines = [child.stdout.readline()]
    assert lines[0] == b"open\n", child.stderr.read()
    if tear_after:
        while (line := child.stdout.readline()) not in (b"tearing\n", b""):
            lines.append(line)
    else:
        for _ in range(10):  # some acknowledged batches first, however loaded the machine is
            lines.append(child.stdout.readline())
        time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    return lines + out.split(b"\n")


def test_kill_9_mid_stream_loses_no_acknowledged_record_and_leaves_no_partial_one(root: Path) -> None:
    acked: dict[tuple[int, int], int] = {}
    torn = 0
    for run, (tear_after, delay) in enumerate([(30, 0.0), (0, 0.3), (45, 0.0)]):
        for line in run_writer_and_kill(root, run * 1_000_000, tear_after, delay):
            if line.endswith(b"]"):  # a line cut by the kill was never fully acknowledged to us
                acked.update({(p, o): s for p, o, s in json.loads(line)})
        with LocalBus(root, {HOPS_TOPIC: TopicConfig(partitions=4)}) as bus:
            records = drain(bus)
            torn += bus.stats.torn_tails
        found = {(r.partition, r.offset): json.loads(r.value)["seq"] for r in records}
        assert all(found.get(pos) == s for pos, s in acked.items()), "an acknowledged record is missing"
        for r in records:
            assert r.key == f"order-{json.loads(r.value)['seq'] % 53}"  # whole, consistent records only
        by_partition: dict[int, list[int]] = {}
        for r in records:
            by_partition.setdefault(r.partition, []).append(r.offset)
        assert all(offsets == list(range(len(offsets))) for offsets in by_partition.values())
    assert len(acked) >= 1500 and torn == 2


# --- segments and retention -----------------------------------------------------------------------

SMALL = {HOPS_TOPIC: TopicConfig(partitions=1, segment_bytes=4096)}


def fill(bus: LocalBus, n: int, size: int = 300) -> None:
    for i in range(n):
        bus.produce_batch(HOPS_TOPIC, [Message("k", bytes([65 + i % 26]) * size)])


def test_segments_roll_at_their_size_and_reading_crosses_them(root: Path) -> None:
    with LocalBus(root, SMALL) as bus:
        fill(bus, 40)
        assert len(segments(root)) >= 3
        assert all(p.stat().st_size <= 4096 for p in segments(root)[:-1])
        assert [r.offset for r in drain(bus)] == list(range(40))
    with LocalBus(root, SMALL) as bus:
        assert bus.end_offsets(HOPS_TOPIC) == {0: 40}
        assert len(drain(bus)) == 40


def test_segments_every_group_has_committed_past_are_deleted(root: Path) -> None:
    with LocalBus(root, SMALL) as bus:
        fast, slow = bus.consumer(HOPS_TOPIC, "fast"), bus.consumer(HOPS_TOPIC, "slow")
        fill(bus, 40)
        before = len(segments(root))
        fast.commit({0: 40})
        assert len(segments(root)) == before  # "slow" has not read anything yet
        slow.commit({0: 25})
        assert len(segments(root)) < before
        assert 0 < bus.start_offsets(HOPS_TOPIC)[0] <= 25
        fast.close()
        slow.close()
        assert [r.offset for r in drain(bus, "slow")] == list(range(25, 40))
        assert bus.stats.unread_deleted == 0


def test_age_retention_deletes_old_sealed_segments_and_counts_unread_records(root: Path) -> None:
    clock = ManualClock(time.time_ns() // 1_000_000)
    config = {HOPS_TOPIC: TopicConfig(partitions=1, segment_bytes=4096, retention_ms=60_000)}
    with LocalBus(root, config, clock=clock) as bus:
        fill(bus, 40)
        assert bus.enforce_retention() == 0
        clock.advance(120_000)
        assert bus.enforce_retention() > 0
        assert len(segments(root)) == 1  # only the active segment is left
        assert bus.stats.unread_deleted == bus.start_offsets(HOPS_TOPIC)[0] > 0
        assert drain(bus)[0].offset == bus.start_offsets(HOPS_TOPIC)[0]


def test_size_retention_keeps_each_partition_under_its_limit(root: Path) -> None:
    config = {HOPS_TOPIC: TopicConfig(partitions=1, segment_bytes=4096, retention_bytes=10_000)}
    with LocalBus(root, config) as bus:
        fill(bus, 100)
        assert sum(p.stat().st_size for p in segments(root)) <= 10_000 + 4096
        assert len(drain(bus)) == 100 - bus.start_offsets(HOPS_TOPIC)[0]


def test_the_dead_letter_topic_exists_by_default_with_one_partition(root: Path) -> None:
    with LocalBus(root) as bus:
        assert bus.partitions(DEADLETTER_TOPIC) == [0] and len(bus.partitions(HOPS_TOPIC)) == 8


def test_a_poll_waiting_on_the_log_wakes_within_50ms_of_the_append(bus: LocalBus) -> None:
    consumer = bus.consumer(HOPS_TOPIC, "g")
    delays: list[float] = []
    woke: list[float] = []

    def wait() -> None:
        if consumer.poll(10, 5.0):
            woke.append(time.monotonic())

    for i in range(5):
        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.02)
        bus.produce_batch(HOPS_TOPIC, [Message("k", str(i).encode())])
        acked = time.monotonic()
        thread.join(5.0)
        delays.append(woke[-1] - acked)
    consumer.close()
    assert max(delays) < 0.05, delays


def test_a_reader_keeps_reading_a_segment_deleted_under_it(root: Path) -> None:
    config = {HOPS_TOPIC: TopicConfig(partitions=1, segment_bytes=4096, retention_bytes=5000)}
    with LocalBus(root, config) as bus:
        consumer = bus.consumer(HOPS_TOPIC, "g")
        fill(bus, 3)
        assert [r.offset for r in consumer.poll(1, 0.0)] == [0]
        fill(bus, 60)  # size retention deletes the segment the reader is in
        assert bus.start_offsets(HOPS_TOPIC)[0] > 0
        offsets = [r.offset for r in consumer.poll(1000, 0.0)]
        consumer.close()
    assert offsets[0] == 1 and offsets[-1] == 62 and offsets == sorted(offsets)


def test_closing_the_bus_ends_a_poll_waiting_in_another_thread(root: Path) -> None:
    bus = LocalBus(root, ONE)
    consumer = bus.consumer(HOPS_TOPIC, "g")
    results: list[list[Record]] = []
    thread = threading.Thread(target=lambda: results.append(consumer.poll(10, 5.0)))
    thread.start()
    time.sleep(0.05)
    bus.close()
    thread.join(2.0)
    assert not thread.is_alive() and results == [[]]
    consumer.close()
