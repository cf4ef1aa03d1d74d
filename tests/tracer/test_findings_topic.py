"""The findings topic: the record of a finding, decoding it back, the sink that publishes before it
stores, and the feed a detectors process reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from tests.tracer.conftest import T0
from tracer.bus import FINDINGS_TOPIC, Record
from tracer.errors import EventError, StoreError
from tracer.fakebus import MemoryBus
from tracer.findings_topic import FindingsFeed, PublishingSink, decode_finding, finding_message, incident_key
from tracer.memstore import MemStore
from tracer.model import Finding

OPEN = Finding("o-1", "web_order", "missing", "payment.authorized", "checkout.placed", T0, T0 + 5, trace_id="ab" * 16)
RESOLVED = Finding(
    "o-1", "web_order", "missing", "payment.authorized", "checkout.placed", T0, T0 + 5, "resolved", T0 + 900, 0
)


def test_a_finding_is_keyed_by_its_incident_and_decodes_back_to_itself() -> None:
    message = finding_message(OPEN)
    assert message.key == incident_key(OPEN) == "web_order/payment.authorized/missing"
    assert decode_finding(message.value) == OPEN
    assert decode_finding(finding_message(RESOLVED).value) == RESOLVED


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (b"{not json", "finding"),
        (b'{"order_id": "o"}', "finding"),
        (finding_message(OPEN).value.replace(b'"missing"', b'"lost"'), "kind"),
        (finding_message(OPEN).value.replace(b'"open"', b'"gone"'), "status"),
        (finding_message(OPEN).value.replace(b'"due_at":"', b'"due_at":"yesterday'), "due_at"),
    ],
)
def test_a_record_that_is_not_a_finding_is_refused_naming_the_field(value: bytes, named: str) -> None:
    with pytest.raises(EventError) as caught:
        decode_finding(value)
    assert caught.value.field == named


def test_findings_are_published_before_the_store_write_so_a_failed_write_loses_none() -> None:
    bus = MemoryBus({FINDINGS_TOPIC: 2})
    store = MemStore()
    sink = PublishingSink(store, bus)
    store.fail_writes = 1
    with pytest.raises(StoreError):
        sink.write([], [OPEN], [])
    assert [decode_finding(r.value) for r in bus.records(FINDINGS_TOPIC)] == [OPEN]
    sink.write([], [OPEN], [])  # the processor writes the same batch again: the same finding again
    assert store.findings(status="all") == [OPEN]
    assert sink.published == 2


class _Consumer:
    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.committed: dict[int, int] = {}

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out, self.records = self.records[:max_records], self.records[max_records:]
        return out

    def commit(self, positions: Mapping[int, int]) -> None:
        self.committed.update(positions)


def _records(values: Sequence[bytes]) -> list[Record]:
    return [Record(FINDINGS_TOPIC, 0, i, T0, "k", v) for i, v in enumerate(values)]


def test_the_feed_skips_a_bad_record_and_commits_past_everything_it_read() -> None:
    consumer = _Consumer(_records([finding_message(OPEN).value, b"garbage", finding_message(RESOLVED).value]))
    feed = FindingsFeed(consumer)
    assert feed.poll() == [OPEN, RESOLVED]
    assert feed.rejected == 1 and consumer.committed == {}
    feed.commit()
    assert consumer.committed == {0: 3}
