"""The benchmark suite keeps working: the workload generator is deterministic and valid, every
benchmark runs at a toy size, and the report marks targets met and missed. Nothing here is timed:
performance is shown by ``make bench`` alone."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from bench import TOY, Context, Row, Section, Target, workload
from bench.__main__ import BENCHES, Bench, Outcome, Run, main, render, update
from tracer.events import decode_line

SPEC = workload.Spec(400)


def test_the_same_spec_gives_the_same_bytes() -> None:
    assert list(workload.lines(SPEC)) == list(workload.lines(SPEC))


def test_another_seed_gives_other_events() -> None:
    assert list(workload.lines(SPEC)) != list(workload.lines(workload.Spec(400, seed=1)))


def test_every_generated_line_is_a_valid_hop_event() -> None:
    for line in workload.lines(SPEC):
        decode_line(line)


def test_order_ids_and_customer_ids_look_real() -> None:
    first = msgspec.json.decode(next(workload.lines(SPEC)))
    assert first["order_id"].startswith("ord-") and len(first["order_id"]) == 13
    assert first["customer_id"].startswith("cus-")


def test_the_stream_holds_errors_duplicates_and_lost_hops() -> None:
    summary = workload.Summary()
    lines = list(workload.lines(workload.Spec(3000), summary))
    events = [msgspec.json.decode(line) for line in lines]
    assert summary.events == len(lines)
    assert summary.duplicates > 0 and any(n > 1 for n in collections.Counter(lines).values())
    assert summary.errors == sum(1 for ev in events if ev.get("status") == "error")
    hops_per_order = collections.Counter(ev["order_id"] for ev in events)
    assert summary.missing_hop > 0 and min(hops_per_order.values()) < 5


def test_lines_come_out_mostly_in_event_time_order() -> None:
    times = [decode_line(line).ts for line in workload.lines(SPEC)]
    late = sum(1 for a, b in itertools.pairwise(times) if b < a - 1000)
    assert 0 < late < len(times) * 0.05


def test_write_puts_one_event_per_line(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    summary = workload.write(path, SPEC)
    assert path.read_bytes().count(b"\n") == summary.events
    assert path.stat().st_size == summary.bytes


def test_a_spec_with_no_orders_is_refused() -> None:
    with pytest.raises(ValueError, match="orders"):
        workload.Spec(0)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    yield Context(TOY, tmp_path_factory.mktemp("bench"), log=lambda message: None)


def _bench(name: str) -> Bench:
    return next(b for b in BENCHES if b.name == name)


def test_memory_bench_runs_at_toy_size(ctx: Context) -> None:
    section = _bench("memory").run(ctx)
    assert section.rows and all(row.value is not None and row.value > 0 for row in section.rows)


def test_metrics_bench_runs_at_toy_size(ctx: Context) -> None:
    section = _bench("metrics").run(ctx)
    assert section.rows and all(row.value is not None and row.value > 0 for row in section.rows)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["throughput", "lookup", "backtest"])
def test_store_benches_run_at_toy_size(ctx: Context, name: str) -> None:
    section = _bench(name).run(ctx)
    assert section.rows
    assert all(row.value is not None for row in section.rows), [row.why for row in section.rows]


def test_a_row_passes_or_fails_its_target() -> None:
    at_least = Target("ratio", ">=", 0.8)
    assert Row("x", 90, "events/s", 100, at_least).result == "PASS"
    assert Row("x", 70, "events/s", 100, at_least).result == "FAIL"
    assert Row("x", None, "events/s", None, at_least, why="no store").result == "NOT RUN"
    assert Row("x", 16, "ms", None, Target("value", "<=", 15)).result == "FAIL"
    assert Row("x", 1, "ms").result == ""


def test_the_report_shows_numbers_references_ratios_and_results() -> None:
    bench = Bench("demo", 2, "A demo", lambda ctx: Section(""))
    section = Section("a loop", [Row("speed", 90, "events/s", 100, Target("ratio", ">=", 0.8))], ["a note"])
    run = Run(TOY, datetime(2026, 11, 22, tzinfo=UTC), (0.5, 0.4, 0.3))
    run.outcomes.append(Outcome(bench, section, 1.0, (0.5, 0.6)))
    text = render(run)
    assert "| demo | speed | 90 events/s | 100 events/s | 0.90 | ratio >= 0.8 | **PASS** |" in text
    assert "Python" in text and "clickhouse-connect" in text and "a note" in text


def test_an_unknown_benchmark_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--only", "nonesuch"]) == 2
    assert "nonesuch" in capsys.readouterr().err


def test_update_replaces_only_the_remeasured_benchmarks() -> None:
    def outcome(name: str, value: float, note: str) -> Outcome:
        bench = Bench(name, 2, f"The {name}", lambda ctx: Section(""))
        return Outcome(bench, Section("a loop", [Row("speed", value, "events/s", 100)], [note]), 1.0, (0.5, 0.6))

    # "memory" is also a row of the machine table ("| memory | 23.5 GiB |"): only summary rows move.
    first = Run(TOY, datetime(2026, 11, 22, tzinfo=UTC), (0.5, 0.4, 0.3))
    first.outcomes += [
        outcome("throughput", 10, "old t"),
        outcome("memory", 20, "old m"),
        outcome("lookup", 30, "old l"),
    ]
    again = Run(TOY, datetime(2026, 11, 28, 13, 0, tzinfo=UTC), (0.5, 0.4, 0.3))
    again.outcomes.append(outcome("memory", 25, "new m"))
    published = render(first)
    text = update(update(published, again), again)
    assert "| memory | speed | 25 events/s |" in text and "| memory | speed | 20 events/s |" not in text
    assert "new m" in text and "old m" not in text and "old t" in text and "old l" in text
    machine = published[: published.index("## Summary")].split("\n")
    assert [x for x in text[: text.index("## Summary")].split("\n") if not x.startswith("| re-measured")] == machine
    rows = text[text.index("## Summary") :].split("\n## ")[0]
    assert [line.split(" | ")[0] for line in rows.split("\n") if line.startswith("| ") and "---" not in line][1:] == [
        "| throughput",
        "| memory",
        "| lookup",
    ]  # the summary keeps the registry's order
    assert text.index("## throughput — ") < text.index("## memory — ") < text.index("## lookup — ")
    assert text.count("| re-measured | memory on 2026-11-28 13:00 UTC") == 1  # a second update supersedes the first
    assert text.index("| re-measured |") < text.index("## Summary")


def test_update_needs_a_partial_full_scale_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--update"]) == 2
    assert main(["--update", "--quick", "--only", "throughput"]) == 2
    assert "--update" in capsys.readouterr().err
