"""The OTLP benchmark (bench/otlp.py) keeps working: its requests are valid OTLP that ordertrail
maps to hops, and it runs at toy size against real servers with a number in every row. Nothing
here is timed: the target is shown by ``make bench`` alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import TOY, Context, otlp
from bench.__main__ import BENCHES
from collectors.otlp import decode_traces
from collectors.spanmap import SpanMapping


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    yield Context(TOY, tmp_path_factory.mktemp("otlp"), log=lambda message: None)


def test_the_otlp_bench_is_registered_for_issue_6() -> None:
    assert "otlp" in [b.name for b in BENCHES if b.issue == 6]


def test_the_requests_are_exports_of_512_spans_each_a_hop_of_the_example_journey() -> None:
    bodies = list(otlp.requests(1100, start_ns=1_800_000_000_000_000_000))
    batches = [decode_traces(body, "protobuf", SpanMapping()) for body in bodies]
    assert [b.spans for b in batches] == [512, 512, 76]
    assert all(not b.rejected and not b.ignored for b in batches)
    first = batches[0].events[:5]
    assert [e.hop for e in first] == [*otlp.HOPS, otlp.LAST_HOP]
    assert len({e.order_id for e in first}) == 1 and len({e.trace_id for e in first}) == 1


@pytest.mark.integration
def test_the_otlp_bench_runs_at_toy_size(ctx: Context) -> None:
    section = next(b for b in BENCHES if b.name == "otlp").run(ctx)
    assert len(section.rows) == 3 and section.notes
    assert all(row.value is not None for row in section.rows)
