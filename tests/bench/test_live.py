"""The live-pipeline benchmarks (bench/live.py) keep working: each runs at a toy size against real
``ordertrail run`` servers and reports a number in every row. Nothing here is timed: the targets
are shown by ``make bench`` alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import TOY, Context, live
from bench.__main__ import BENCHES
from tracer.journeys import load_journeys


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    yield Context(TOY, tmp_path_factory.mktemp("live"), log=lambda message: None)


def test_the_live_benches_are_registered_for_issue_3() -> None:
    names = {b.name for b in BENCHES if b.issue == 3}
    assert names == {"ingest", "e2e", "delay", "sdk", "lookup-api"}


def test_the_delay_journey_joins_the_example_journeys(ctx: Context) -> None:
    journeys = load_journeys(live._delay_journeys(ctx))
    assert {"web_order", live.DELAY_JOURNEY} <= set(journeys.journeys)


def test_a_metric_is_read_from_prometheus_text() -> None:
    text = b'# TYPE x counter\nordertrail_events_processed_total 1234.0\nother{result="accepted"} 5.0\n'
    assert live._metric(text, "ordertrail_events_processed_total") == 1234
    assert live._metric(text, 'other{result="accepted"}') == 5
    assert live._metric(text, "absent") == 0


@pytest.mark.integration
@pytest.mark.parametrize("name", ["ingest", "e2e", "delay", "sdk", "lookup-api"])
def test_live_bench_runs_at_toy_size(ctx: Context, name: str) -> None:
    section = next(b for b in BENCHES if b.name == name).run(ctx)
    assert section.rows and section.notes
    assert all(row.value is not None for row in section.rows), [row.why for row in section.rows]
