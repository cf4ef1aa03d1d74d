"""``ordertrail lookup`` against a stub HTTP server on 127.0.0.1 (standard library, in a thread)."""

from __future__ import annotations

import argparse
import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ordertrail import lookup_cli
from tests.ordertrail.test_page import order_view

VIEW = order_view()
UNKNOWN = {"error": "unknown order", "order_id": "A-404", "explanation": "No order “A-404” was found. Checked: hops."}


class Stub:
    """Answers GET with ``answers[path]`` (status, content type, body), else a 404 like ordertrail's."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, str, bytes]] = {}
        self.paths: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.paths.append(self.path)
                status, ctype, body = stub.answers.get(
                    self.path, (404, "application/json", json.dumps(UNKNOWN).encode())
                )
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def answer(self, path: str, body: object, status: int = 200, ctype: str = "application/json") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[path] = (status, ctype, raw)


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    s.thread.start()
    try:
        yield s
    finally:
        s.server.shutdown()
        s.server.server_close()
        s.thread.join(timeout=5)


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    lookup_cli.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = lookup_cli.main(parser.parse_args(argv), environ=environ or {}, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_found_order_prints_explanation_advice_and_timeline(stub: Stub) -> None:
    stub.answer("/v1/orders/A-1001", VIEW)
    code, out, err = run("A-1001", "--server", stub.url)
    assert code == 0
    assert err == ""
    assert out.startswith("Order A-1001: Stuck (missing)\ncustomer c-42 · trace 4bf92f3577b34da6a3ce929d0e0e4736")
    assert "Payment was taken at 10:02 UTC. The warehouse has not confirmed stock" in out
    assert "What to tell the customer:\n  Apologise for the delay" in out
    assert (
        "  2026-11-22 10:02:03  ok     Payment was taken                         [payment.authorized · payments]" in out
    )
    assert "  2026-11-22 10:04:03  due    Next, the warehouse should confirm stock  [inventory.reserved" in out


def test_a_found_order_prints_what_was_noticed_and_the_incident(stub: Stub) -> None:
    stub.answer("/v1/orders/A-1001", VIEW)
    _, out, _ = run("A-1001", "--server", stub.url)
    assert "  Overdue: inventory.reserved, due 2026-11-22 10:04:03, resolved, 40 seconds late" in out
    assert "Part of a wider incident:\n  id=inc-7, orders=37" in out


def test_the_order_id_is_percent_encoded_in_the_path(stub: Stub) -> None:
    run("A/1 2?x", "--server", stub.url)
    assert stub.paths == ["/v1/orders/A%2F1%202%3Fx"]


def test_an_unknown_order_prints_what_the_server_checked_and_exits_1(stub: Stub) -> None:
    code, out, err = run("A-404", "--server", stub.url)
    assert code == 1
    assert out == ""
    assert err == "No order “A-404” was found. Checked: hops.\n"


def test_json_prints_the_answer_as_it_came(stub: Stub) -> None:
    stub.answer("/v1/orders/A-1001", VIEW)
    code, out, _ = run("A-1001", "--server", stub.url, "--json")
    assert code == 0
    assert json.loads(out) == VIEW


def test_json_of_an_unknown_order_is_the_404_body_and_exits_1(stub: Stub) -> None:
    code, out, _ = run("A-404", "--server", stub.url, "--json")
    assert code == 1
    assert json.loads(out) == UNKNOWN


def test_the_server_comes_from_the_environment_without_the_option(stub: Stub) -> None:
    stub.answer("/v1/orders/A-1001", VIEW)
    code, _, _ = run("A-1001", environ={lookup_cli.ENV_SERVER: stub.url + "/"})
    assert code == 0
    assert stub.paths == ["/v1/orders/A-1001"]


def test_an_unreachable_server_exits_2_saying_where_and_what_to_do() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, out, err = run("A-1001", "--server", url, "--timeout", "5")
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: cannot reach the ordertrail server at {url}: connection refused.")
    assert "--server URL or ORDERTRAIL_SERVER" in err


def test_a_server_error_exits_2_with_the_answer(stub: Stub) -> None:
    stub.answer("/v1/orders/A-1001", {"error": "the store is unavailable"}, status=503)
    code, _, err = run("A-1001", "--server", stub.url)
    assert code == 2
    assert "answered 503" in err
    assert "the store is unavailable" in err


def test_something_that_is_not_ordertrail_exits_2(stub: Stub) -> None:
    stub.answer("/v1/orders/A-1001", b"<html>hello</html>", ctype="text/html")
    code, _, err = run("A-1001", "--server", stub.url)
    assert code == 2
    assert "did not answer as an ordertrail server" in err


def test_a_server_that_is_not_a_url_exits_2() -> None:
    code, _, err = run("A-1001", "--server", "127.0.0.1:4320")
    assert code == 2
    assert "is not a URL like http://127.0.0.1:4320" in err


def test_control_characters_from_events_cannot_drive_the_terminal(stub: Stub) -> None:
    hostile = dict(VIEW, explanation="Payment was taken \x1b[2J\x1b]0;pwned\x07 at 10:02 UTC.", customer_id="c\x9b1")
    stub.answer("/v1/orders/A-1001", hostile)
    code, out, _ = run("A-1001", "--server", stub.url)
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "\\x1b[2J" in out
