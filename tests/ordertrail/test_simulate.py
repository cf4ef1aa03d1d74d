from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ordertrail import simulate
from ordertrail.simulate import BatchPoster
from tracer.events import decode_batch
from tracer.journeys import load_journeys


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ordertrail simulate")
    simulate.add_arguments(parser)
    return parser.parse_args(list(argv))


class FakeServer:
    """``send`` for the command: answers 202 like ``POST /v1/events`` and keeps what it got."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.gets: list[str] = []

    def __call__(self, url: str, body: bytes | None) -> tuple[int, bytes]:
        if body is None:
            self.gets.append(url)
            return 200, b"ok"
        self.bodies.append(body)
        n = len(decode_batch(body).events)
        return 202, json.dumps({"accepted": n, "rejected": []}).encode()

    def events(self) -> int:
        return sum(len(decode_batch(b).events) for b in self.bodies)


OFFLINE = (
    "--start",
    "2026-11-22T08:00:00Z",
    "--duration",
    "1m",
    "--seed",
    "5",
    "--fault",
    "drop:payment.authorized:0.5@10s+20s",
)


def test_offline_writes_the_same_events_for_a_seed_with_ledger_and_journeys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    ledger, journeys = tmp_path / "ledger.json", tmp_path / "journeys.yaml"
    args = ("--ledger", str(ledger), "--journeys-out", str(journeys))
    assert simulate.main(parse("--ndjson", str(first), *OFFLINE, *args)) == 0
    out = capsys.readouterr().out
    assert simulate.main(parse("--ndjson", str(second), *OFFLINE)) == 0
    assert first.read_bytes() == second.read_bytes()
    batch = decode_batch(first.read_bytes())
    assert batch.rejected == [] and len(batch.events) > 1000
    wire = json.loads(ledger.read_text())
    assert wire["faults"][0]["fault"] == "drop:payment.authorized:0.5@10s+20s"
    assert len(wire["effects"]) > 50 and {e["effect"] for e in wire["effects"]} == {"dropped"}
    assert "web_order" in load_journeys(journeys).journeys
    assert "orders (web_order" in out and f"written to {first}" in out
    assert f"{len(wire['effects'])} dropped" in out
    assert "backtest with --until 2026-11-22T08:0" in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--fault", "drop:payment.authorized:2"), "--fault: fault 'drop:payment.authorized:2': share '2'"),
        (("--fault", "drop:payment.captured"), "'payment.captured' is not in the shop"),
        (("--ndjson", "x.ndjson"), "--duration: required with --ndjson"),
        (("--duration", "soon"), "--duration: 'soon' is not a duration"),
        (("--start", "2026-11-22T08:00:00Z"), "--start: only with --ndjson"),
        (("--rate", "0"), "--rate: rate 0.0 must be more than 0"),
    ],
)
def test_unusable_arguments_exit_2_naming_the_option(
    argv: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert simulate.main(parse(*argv), send=FakeServer()) == 2
    assert says in capsys.readouterr().err


def test_realtime_posts_every_event_in_batches_and_prints_the_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeServer()
    argv = ("--url", "http://shop.test/", "--rate", "100", "--duration", "400ms", "--fault", "break", "--batch", "50")
    assert simulate.main(parse(*argv), send=server) == 0
    assert server.gets == ["http://shop.test/healthz"]
    out = capsys.readouterr().out
    sent = server.events()
    assert sent > 30
    assert f"{sent:,} events" in out and f"{sent:,} accepted, 0 rejected" in out
    assert "break@0s: " in out


def test_realtime_refuses_a_server_it_cannot_reach(capsys: pytest.CaptureFixture[str]) -> None:
    def unreachable(url: str, body: bytes | None) -> tuple[int, bytes]:
        raise ConnectionRefusedError(111, "Connection refused")

    assert simulate.main(parse("--duration", "1s"), send=unreachable, environ={"ORDERTRAIL_URL": "http://h:1"}) == 2
    assert "--url: http://h:1 cannot be reached" in capsys.readouterr().err


def event(n: int) -> dict[str, object]:
    return {"order_id": f"W-{n}", "hop": "checkout.placed", "ts": 1_795_334_400_000 + n}


def test_the_poster_retries_server_errors_and_does_not_retry_refusals() -> None:
    answers = [(503, b"busy"), (202, b'{"accepted": 2, "rejected": []}'), (413, b"too large")]
    calls: list[bytes] = []

    def send(url: str, body: bytes | None) -> tuple[int, bytes]:
        assert body is not None
        calls.append(body)
        return answers.pop(0)

    poster = BatchPoster("http://h/v1/events", send, batch=2, interval_s=0.01, backoff_s=0.01)
    poster.emit(event(1))
    poster.emit(event(2))
    poster.close(2.0)
    assert (poster.accepted, poster.failed, len(calls)) == (2, 0, 2)
    poster = BatchPoster("http://h/v1/events", send, batch=2, interval_s=0.01, backoff_s=0.01)
    poster.emit(event(3))
    poster.close(2.0)
    assert (poster.accepted, poster.failed, len(calls)) == (0, 1, 3)
    assert poster.errors == ["http://h/v1/events answered 413: too large"]


def test_the_poster_never_blocks_and_counts_what_a_full_buffer_drops() -> None:
    release = threading.Event()

    def stuck(url: str, body: bytes | None) -> tuple[int, bytes]:
        release.wait(5)
        raise ConnectionRefusedError(111, "Connection refused")

    poster = BatchPoster("http://h/v1/events", stuck, batch=1, max_buffered=3, interval_s=0.01, retries=0)
    for n in range(10):
        poster.emit(event(n))
    assert poster.dropped >= 6
    release.set()
    poster.close(2.0)
    assert poster.failed + poster.dropped == 10
    assert "not delivered" in poster.describe() and "dropped (buffer full)" in poster.describe()


@pytest.mark.integration
def test_realtime_posts_to_a_real_http_server(capsys: pytest.CaptureFixture[str]) -> None:
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(body)
            reply = json.dumps({"accepted": len(decode_batch(body).events), "rejected": []}).encode()
            self.send_response(202)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert simulate.main(parse("--url", url, "--rate", "50", "--duration", "300ms")) == 0
    finally:
        server.shutdown()
        server.server_close()
    sent = sum(len(decode_batch(b).events) for b in received)
    assert sent > 5 and f"{sent:,} accepted" in capsys.readouterr().out
