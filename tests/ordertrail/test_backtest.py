"""``ordertrail backtest`` over the sample day (examples/events.ndjson): the exact final findings,
rejected lines on stderr, the clock moved by --until, exit statuses, inputs (file, gzip, stdin),
the store path, and the progress bar."""

from __future__ import annotations

import gzip
import io
import json
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from ordertrail import backtest
from ordertrail.cli import build_parser, main
from ordertrail.progress import BYTES, Progress
from tracer.engine import OrderSnapshot
from tracer.errors import StoreError
from tracer.memstore import MemStore
from tracer.model import Finding, HopEvent

ROOT = Path(__file__).resolve().parents[2]
JOURNEYS = ROOT / "examples" / "journeys.yaml"
EVENTS = ROOT / "examples" / "events.ndjson"
FINDING_KEYS = set(Finding.__struct_fields__)  # CONTRACT §3: the wire object has exactly these
REJECTED = "line 22: customer: 'C-508' is not a hop event field; allowed: order_id, hop, ts, event_id"

# (order_id, kind, hop, after, due_at, detected_at, status, resolved_at, late_by_ms) of the sample day
SAMPLE_FINDINGS = [
    # payment never arrived
    ("A-1002", "missing", "payment.authorized", "checkout.placed", "09:05:30.000", "09:10:00.000", "open", None, None),
    # the warehouse took 50 s (stall_after 20 s), then reserved the stock
    (
        "A-1003",
        "stalled",
        "inventory.reserved",
        "payment.authorized",
        "09:10:21.500",
        "09:10:30.000",
        "resolved",
        "09:10:51.500",
        30_000,
    ),
    # shipped, but the confirmation email never went out
    (
        "A-1004",
        "unconfirmed",
        "email.confirmation_sent",
        "payment.authorized",
        "09:15:33.000",
        "09:20:00.000",
        "open",
        None,
        None,
    ),
    # card declined, retried 21 s later with success
    (
        "A-1005",
        "failed",
        "payment.authorized",
        "checkout.placed",
        "09:20:04.000",
        "09:20:04.000",
        "resolved",
        "09:20:25.000",
        21_000,
    ),
]


def day(hms: str | None) -> str | None:
    return None if hms is None else f"2026-11-22T{hms}Z"


def expected(rows: Sequence[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [
        (o, k, h, a, day(str(due)), day(str(det)), st, day(res) if isinstance(res, str) else None, late)
        for o, k, h, a, due, det, st, res, late in rows
    ]


def summarise(stdout: str) -> list[tuple[object, ...]]:
    found = [json.loads(line) for line in stdout.splitlines()]
    return [
        (
            f["order_id"],
            f["kind"],
            f["hop"],
            f["after"],
            f["due_at"],
            f["detected_at"],
            f["status"],
            f["resolved_at"],
            f["late_by_ms"],
        )
        for f in found
    ]


def run(*argv: str) -> int:
    return main(["backtest", "--journeys", str(JOURNEYS), *argv])


def test_the_sample_day_gives_exactly_its_findings(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(EVENTS)) == 0
    out, _ = capsys.readouterr()
    assert summarise(out) == expected(SAMPLE_FINDINGS)


def test_stdout_holds_only_findings_ndjson(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(EVENTS)) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 4 and out.endswith("\n")
    for line in lines:
        obj = json.loads(line)
        assert set(obj) == FINDING_KEYS
        assert obj["journey"] == "web_order"
        assert len(obj["trace_id"]) == 32
        assert " " not in line  # compact JSON
    assert json.loads(lines[0])["customer_id"] == "C-502"


def test_rejected_lines_go_to_stderr_with_their_number_and_the_run_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(str(EVENTS)) == 0
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0].startswith(REJECTED)
    assert lines[-1].startswith("backtest: 31 lines, 30 accepted, 1 rejected, 1 duplicate, 7 orders; ")
    assert (
        "findings: missing 1 (1 open), stalled 1 (1 resolved), unconfirmed 1 (1 open), failed 1 (1 resolved)"
        in (lines[-1])
    )
    assert "\r" not in err  # stderr is not a terminal here: no progress bar


def test_quiet_leaves_out_the_summary_but_not_the_rejected_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--quiet", str(EVENTS)) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [err.splitlines()[0]]
    assert err.startswith(REJECTED)


def test_blank_lines_are_skipped_but_counted_in_line_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n   \n" + EVENTS.read_bytes().replace(b"\n", b"\r\n"))
    assert run(str(path)) == 0
    out, err = capsys.readouterr()
    assert summarise(out) == expected(SAMPLE_FINDINGS)
    assert err.startswith(REJECTED.replace("line 22", "line 24"))
    assert "31 lines, 30 accepted, 1 rejected" in err


def test_the_order_of_lines_in_the_file_does_not_change_the_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(str(EVENTS)) == 0
    reference = capsys.readouterr().out
    lines = EVENTS.read_bytes().splitlines(keepends=True)
    rng = random.Random(7)
    for attempt in range(5):
        rng.shuffle(lines)
        path = tmp_path / f"shuffled-{attempt}.ndjson"
        path.write_bytes(b"".join(lines))
        assert run(str(path)) == 0
        assert capsys.readouterr().out == reference


def test_until_later_moves_the_clock_and_raises_what_fell_due(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--until", "2026-11-23T18:00:00Z", str(EVENTS)) == 0
    found = summarise(capsys.readouterr().out)
    assert found[:4] == expected(SAMPLE_FINDINGS)
    assert found[4:] == [
        (
            "A-1007",
            "missing",
            "fulfilment.shipped",
            "inventory.reserved",
            "2026-11-23T17:00:08.000Z",
            "2026-11-23T18:00:00.000Z",
            "open",
            None,
            None,
        )
    ]


def test_until_accepts_epoch_milliseconds(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--until", "2026-11-23T18:00:00Z", str(EVENTS)) == 0
    as_text = capsys.readouterr().out
    assert run("--until", "1795456800000", str(EVENTS)) == 0
    assert capsys.readouterr().out == as_text


def test_until_earlier_replays_only_what_had_happened_by_then(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--until", "2026-11-22T09:10:40Z", str(EVENTS)) == 0
    out, err = capsys.readouterr()
    assert summarise(out) == expected(
        [
            SAMPLE_FINDINGS[0],
            (*SAMPLE_FINDINGS[1][:6], "open", None, None),
        ]
    )
    assert "18 events after --until not replayed" in err


@pytest.mark.parametrize("until", ["yesterday", "2026-11-22T10:00:00", "1795339804", ""])
def test_an_unusable_until_exits_2(until: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--until", until, str(EVENTS)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: --until: ")


def test_an_unusable_journeys_file_exits_2_with_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "journeys.yaml"
    bad.write_text("journeys:\n  web_order:\n    start: checkout.placed\n    steps: {}\n", encoding="utf-8")
    assert main(["backtest", "--journeys", str(bad), str(EVENTS)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"error: {bad}: journey 'web_order', field 'steps'" in err


def test_a_missing_journeys_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "--journeys", str(tmp_path / "nope.yaml"), str(EVENTS)]) == 2
    assert "nope.yaml: cannot be read" in capsys.readouterr().err


def test_a_missing_events_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(tmp_path / "nope.ndjson")) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "error: EVENTS: " in err and "nope.ndjson: cannot be read: No such file or directory" in err


def test_missing_journeys_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", str(EVENTS)]) == 2
    assert "--journeys" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--store", "mysql://db", "--store: 'mysql://db' must be chdb:///DIR"),
        ("--retention", "a week", "--retention: 'a week' is not a duration"),
        ("--retention", "0s", "--retention: '0s' must be longer than 0"),
    ],
)
def test_unusable_options_exit_2(option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(option, value, str(EVENTS)) == 2
    assert message in capsys.readouterr().err


def test_a_gzip_file_gives_the_same_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.ndjson.gz"
    path.write_bytes(gzip.compress(EVENTS.read_bytes()))
    assert run(str(path)) == 0
    out, err = capsys.readouterr()
    assert summarise(out) == expected(SAMPLE_FINDINGS)
    assert err.startswith(REJECTED)


def test_a_corrupt_gzip_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.ndjson.gz"
    path.write_bytes(EVENTS.read_bytes())
    assert run(str(path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "events.ndjson.gz: cannot be read" in err


def test_dash_reads_the_events_from_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(EVENTS.read_bytes())))
    assert run("-") == 0
    out, err = capsys.readouterr()
    assert summarise(out) == expected(SAMPLE_FINDINGS)
    assert err.startswith(REJECTED)


def test_an_empty_input_prints_nothing_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.ndjson"
    path.write_bytes(b"")
    assert run(str(path)) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "0 lines, 0 accepted, 0 rejected" in err and "findings: none" in err


def test_a_late_hop_resolves_its_finding_unless_the_order_was_idle_past_retention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.ndjson"
    late = b'{"order_id": "A-1002", "hop": "payment.authorized", "ts": "2026-11-22T18:00:00.000Z"}\n'
    path.write_bytes(EVENTS.read_bytes() + late)
    assert run(str(path)) == 0
    out, err = capsys.readouterr()
    assert summarise(out)[0][6:] == ("resolved", "2026-11-22T18:00:00.000Z", 32_070_000)
    assert run("--retention", "1h", str(path)) == 0
    out, err = capsys.readouterr()
    assert summarise(out)[0][6:] == ("open", None, None)  # no longer held when the payment came
    assert "for orders already closed" in err


# -- the store ----------------------------------------------------------------------------------


def store_args(*extra: str) -> list[str]:
    return ["backtest", "--journeys", str(JOURNEYS), "--store", "chdb:///unused", *extra, str(EVENTS)]


def test_with_a_store_events_findings_and_orders_are_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(backtest, "BATCH", 8)
    store = MemStore()
    args = build_parser().parse_args(store_args())
    assert backtest.main(args, opener=lambda url: store) == 0
    out = capsys.readouterr().out
    assert store.writes >= 4  # 30 events in batches of 8, and the findings raised at the end
    assert store.count_events() == 29  # the duplicate is kept once
    stored = sorted(store.findings(status="all"), key=lambda f: (f.due_at, f.order_id))
    assert [json.dumps(f.to_wire(), separators=(",", ":")) for f in stored] == out.splitlines()
    record = store.order("A-1005")
    assert record is not None and record.snapshot is not None
    assert record.snapshot.status == "completed" and not record.snapshot.open
    assert [ev.hop for ev in record.events][:3] == ["checkout.placed", "payment.authorized", "payment.authorized"]
    assert record.events[1].attrs == {"reason": "card_declined"}  # stored events keep every field


class BrokenStore:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.closed = 0

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        raise self.error

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("error", [StoreError("disk full"), RuntimeError("connection reset")])
def test_a_store_failing_during_the_run_exits_1_and_prints_no_findings(
    error: Exception, capsys: pytest.CaptureFixture[str]
) -> None:
    store = BrokenStore(error)
    args = build_parser().parse_args(store_args())
    assert backtest.main(args, opener=lambda url: store) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "error: --store chdb:///unused: " in err and str(error) in err
    assert store.closed == 1


def test_a_store_that_cannot_be_opened_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(url: str) -> MemStore:
        raise StoreError(f"store {url}: locked by another process")

    args = build_parser().parse_args(store_args())
    assert backtest.main(args, opener=refuse) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "error: --store: chdb:///unused: cannot be opened: store chdb:///unused: locked by another process" in err


@pytest.mark.integration
def test_with_a_chdb_store_the_rows_arrive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tracer.clickhouse import Store

    url = f"chdb://{tmp_path / 'store'}"
    assert run("--store", url, str(EVENTS)) == 0
    out = capsys.readouterr().out
    with Store.open(url) as store:
        stored = sorted(store.findings(status="all"), key=lambda f: (f.due_at, f.order_id))
        assert [json.dumps(f.to_wire(), separators=(",", ":")) for f in stored] == out.splitlines()
        record = store.order("A-1003")
        assert record is not None and record.snapshot is not None
        assert record.snapshot.status == "completed"
        assert [ev.hop for ev in record.events] == [
            "checkout.placed",
            "payment.authorized",
            "email.confirmation_sent",
            "inventory.reserved",
            "fulfilment.shipped",
        ]
        assert [(f.kind, f.status, f.late_by_ms) for f in record.findings] == [("stalled", "resolved", 30_000)]
        assert store.count_events() == 29


# -- the console script -------------------------------------------------------------------------


def test_the_console_script_runs_the_backtest() -> None:
    script = Path(sys.executable).parent / "ordertrail"
    done = subprocess.run(
        [str(script), "backtest", "--journeys", str(JOURNEYS), str(EVENTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert summarise(done.stdout) == expected(SAMPLE_FINDINGS)
    assert done.stderr.startswith(REJECTED)


# -- the progress bar ---------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_progress_bar_is_off_when_stderr_is_not_a_terminal_or_quiet_is_asked() -> None:
    assert not Progress.on(io.StringIO(), "reading").enabled
    assert not Progress.on(Terminal(), "reading", quiet=True).enabled
    assert Progress.on(Terminal(), "reading").enabled


def test_the_progress_bar_redraws_at_most_five_times_a_second_and_is_erased_at_the_end() -> None:
    screen = Terminal()
    ticks = Ticks()
    bar = Progress(screen, "reading", 100_000_000, BYTES, clock=ticks)
    ticks.now = 0.1
    bar.update(1_000_000, 100)  # too soon after the start: not drawn
    assert screen.getvalue() == ""
    ticks.now = 10.0
    bar.update(25_000_000, 500_000)
    ticks.now = 10.1
    bar.update(26_000_000, 510_000)  # too soon after the last draw
    drawn = screen.getvalue()
    assert drawn.count("\r") == 1
    assert " 25% [######" in drawn
    assert "25.0/100.0 MB" in drawn and "50k events/s" in drawn and "ETA 0:30" in drawn
    bar.close()
    assert screen.getvalue().endswith("\r\x1b[K")


def test_the_progress_bar_without_a_total_shows_what_was_read_and_the_rate() -> None:
    bar = Progress(Terminal(), "reading", None, BYTES)
    text = bar.render(3_500_000, 20_000, 2.0)
    assert "3.5 MB" in text and "10k events/s" in text and "ETA" not in text and "%" not in text
