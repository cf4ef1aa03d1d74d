"""The detection lead-time benchmark's run, in event time (no wall clock): the issue's hard break
fires EdgeDegraded within 15 s and long before the first deadline."""

from __future__ import annotations

from bench.detection import BREAK_FAULT, BREAK_JOURNEYS, BREAK_SHOP, BREAK_TARGET_MS, simulate
from tracer.journeys import parse_journeys


def test_the_hard_break_fires_edge_degraded_within_15s_of_event_time() -> None:
    (lead,) = simulate(parse_journeys(BREAK_JOURNEYS), BREAK_SHOP, [BREAK_FAULT], rate=6.0, duration_ms=480_000)
    assert lead.alert == "EdgeDegraded"
    assert lead.alert_ms is not None and lead.alert_ms <= BREAK_TARGET_MS
    assert lead.deadline_ms is not None and lead.deadline_ms > 4 * 60_000
