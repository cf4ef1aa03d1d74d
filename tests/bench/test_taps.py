"""The benchmarks of issue 6 (bench/taps.py) keep working: each runs at a toy size and reports a
number in every row. Nothing here is timed: the targets are shown by ``make bench`` alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import TOY, Context
from bench.__main__ import BENCHES
from tracer.journeys import parse_journeys
from tracer.stitch import Stitcher


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    yield Context(TOY, tmp_path_factory.mktemp("taps"), log=lambda message: None)


def test_the_benches_are_registered_for_issue_6() -> None:
    assert {b.name for b in BENCHES if b.issue == 6} >= {"stitch", "tap"}


def test_the_keyed_workload_stitches_every_payment() -> None:
    from bench import taps

    journeys = parse_journeys(taps.KEYED_JOURNEYS)
    stitcher = Stitcher(journeys)
    sent = taps.keyed_orders(10)
    out = [ev for ev in map(stitcher.stitch, sent) if ev is not None] + stitcher.drain_released()
    assert len(out) == len(sent) and not any(ev.order_id.startswith("pay-") for ev in out)


@pytest.mark.parametrize("name", ["stitch", "tap"])
def test_bench_runs_at_toy_size(ctx: Context, name: str) -> None:
    section = next(b for b in BENCHES if b.name == name).run(ctx)
    assert section.rows and section.notes
    assert all(row.value is not None and row.reference for row in section.rows)
