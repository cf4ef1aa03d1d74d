from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from collectors.sdk import MemoryTransport, SendResult
from ordertrail import simulate
from tracer.events import decode_batch
from tracer.journeys import load_journeys


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ordertrail simulate")
    simulate.add_arguments(parser)
    return parser.parse_args(list(argv))


class Probe:
    """``probe`` for the command: the server answers, and the URLs asked are kept."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> None:
        self.urls.append(url)


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
    assert simulate.main(parse(*argv), transport=MemoryTransport(), probe=Probe()) == 2
    assert says in capsys.readouterr().err


def test_realtime_sends_every_event_through_the_sdk_and_prints_the_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    transport, probe = MemoryTransport(), Probe()
    argv = (
        "--url",
        "http://shop.test/",
        "--rate",
        "100",
        "--duration",
        "1s",
        "--fault",
        "break",
        "--batch",
        "50",
        "--no-drain",
    )
    assert simulate.main(parse(*argv), transport=transport, probe=probe) == 0
    assert probe.urls == ["http://shop.test"]
    out = capsys.readouterr().out
    sent = len(transport.delivered)
    assert sent >= 10 and all(len(b.splitlines()) <= 50 for b in transport.bodies)  # ~100 expected (Poisson)
    assert {e["service"] for e in transport.delivered} >= {"checkout", "payments"}
    assert f"{sent:,} events" in out and f"{sent:,} accepted, 0 rejected" in out
    assert "break@0s: " in out


def test_realtime_exits_1_when_events_are_not_delivered(capsys: pytest.CaptureFixture[str]) -> None:
    refused = MemoryTransport([SendResult("fail", detail="413")] * 1000)
    assert (
        simulate.main(parse("--rate", "50", "--duration", "200ms", "--no-drain"), transport=refused, probe=Probe()) == 1
    )
    assert "not delivered" in capsys.readouterr().out


def test_realtime_refuses_a_server_it_cannot_reach(capsys: pytest.CaptureFixture[str]) -> None:
    def unreachable(url: str) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    argv = parse("--duration", "1s")
    assert simulate.main(argv, probe=unreachable, environ={"ORDERTRAIL_URL": "http://h:1"}) == 2
    assert "--url: http://h:1 cannot be reached" in capsys.readouterr().err


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
        assert simulate.main(parse("--url", url, "--rate", "50", "--duration", "300ms", "--no-drain")) == 0
    finally:
        server.shutdown()
        server.server_close()
    sent = sum(len(decode_batch(b).events) for b in received)
    assert sent > 5 and f"{sent:,} accepted" in capsys.readouterr().out
