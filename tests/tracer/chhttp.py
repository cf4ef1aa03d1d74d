"""A stand-in ClickHouse server for tests: ClickHouse's HTTP interface, every statement run by chDB.

Why: no ClickHouse server can run on the test machines (no Docker; Debian's ``clickhouse-server``
is 18.16, which has no ``DateTime64`` or ``Map``; the chdb wheels export no server entry point).
This serves the part of the HTTP interface that clickhouse-connect uses, so the Store's
``http://`` path runs for real end to end: connection setup, Basic auth, settings and
``param_*`` bindings as URL parameters, Native-format results, lz4-compressed insert bodies and
responses, and errors as ``X-ClickHouse-Exception-Code`` with the server's message. The SQL itself
runs in the ClickHouse engine that chDB embeds. It is not a ClickHouse server: no sessions,
native TCP protocol, progress headers or access control beyond one user.

Run it as a process (chDB runs one engine per process):
``python -m tests.tracer.chhttp DIR --user U --password P [--config-file X.xml] [--setting N=V ...]``
(``--setting``: the user's settings profile, applied before each request's own); it prints
``listening on http://127.0.0.1:PORT`` once ready and serves until SIGTERM. ``--config-file`` is
passed to the engine (e.g. ``remote_servers`` and macros for a one-shard cluster).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import signal
import sys
import tempfile
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.frame

# URL parameters that are not settings.
_TRANSPORT = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "client_protocol_version",
        "wait_end_of_query",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
        "user",
        "password",
    }
)
_INSERT = re.compile(rb"\s*(INSERT\s+INTO\s+[^\n]*?)\s+FORMAT\s+(\w+)[ \t]*\r?\n", re.IGNORECASE)
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_CODE = re.compile(r"Code: (\d+)\.")


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "lz4":
        return bytes(lz4.frame.decompress(body))
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding in ("", "identity"):
        return body
    raise ValueError(f"Content-Encoding {encoding!r} is not supported by this stand-in")


class Engine:
    """The chDB engine and the credentials it accepts; one chDB connection per request keeps
    ``USE`` and ``SET`` from leaking between requests, as sessions-less HTTP does."""

    def __init__(self, path: str, user: str, password: str, config_file: str | None, profile: dict[str, str]) -> None:
        self.dsn = path + (f"?config-file={config_file}" if config_file else "")
        self.user, self.password = user, password
        self.profile = profile  # the user's settings profile: applied first, as a server does
        self.keeper = chdb.connect(self.dsn)  # keeps the engine up between requests
        self.lock = threading.Lock()

    def run(self, sql: str, fmt: str, params: dict[str, str], settings: dict[str, str], database: str) -> bytes:
        with self.lock:
            conn = chdb.connect(self.dsn)
            try:
                if database:
                    conn.query(f"USE `{database}`", "TabSeparated")
                for name, value in {**self.profile, **settings}.items():
                    if re.fullmatch(r"\w+", name):
                        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
                        conn.query(f"SET {name} = '{quoted}'", "TabSeparated")
                result = conn.query(sql, fmt, params=params)
                return bytes(result.bytes() or b"")
            finally:
                conn.close()


class Handler(BaseHTTPRequestHandler):
    engine: Engine
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/ping":
            self._reply(200, b"Ok.\n", {})
        else:
            self._handle(b"")

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # how inserts stream
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            self._handle(b"".join(chunks))
        else:
            self._handle(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _authorized(self, params: dict[str, str]) -> bool:
        user, password = params.get("user", ""), params.get("password", "")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        user = self.headers.get("X-ClickHouse-User", user) or "default"
        password = self.headers.get("X-ClickHouse-Key", password)
        return (user, password) == (self.engine.user, self.engine.password)

    def _handle(self, body: bytes) -> None:
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        if not self._authorized(params):
            message = (
                "Code: 516. DB::Exception: Authentication failed: password is incorrect, or there is no user "
                "with such name. (AUTHENTICATION_FAILED)\n"
            )
            self._reply(403, message.encode(), {"X-ClickHouse-Exception-Code": "516"})
            return
        tmp = None
        try:
            body = _decode(body, self.headers.get("Content-Encoding", ""))
            query = params.get("query", "").encode()
            text = query + (b"\n" if query and body else b"") + body
            insert = _INSERT.match(text)
            if insert is not None:  # the rest is data: chDB reads it from a file
                with tempfile.NamedTemporaryFile(suffix=".data", delete=False) as f:
                    f.write(text[insert.end() :])
                    tmp = f.name
                sql, fmt = f"{insert[1].decode()} FROM INFILE '{tmp}' FORMAT {insert[2].decode()}", "TabSeparated"
            else:
                sql = text.decode()
                match = _FORMAT.search(sql)
                fmt = match[1] if match else params.get("default_format", "TabSeparated")
            bindings = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            settings = {k: v for k, v in params.items() if k not in _TRANSPORT and not k.startswith("param_")}
            out = self.engine.run(sql, fmt, bindings, settings, params.get("database", ""))
        except Exception as exc:
            message = str(exc)
            message = message[message.find("Code: ") :] if "Code: " in message else message
            code = _CODE.search(message)
            self._reply(500, message.encode() + b"\n", {"X-ClickHouse-Exception-Code": code[1] if code else "1001"})
            return
        finally:
            if tmp is not None:
                os.unlink(tmp)
        headers = {"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC", "X-ClickHouse-Summary": json.dumps({})}
        # enable_http_compression is 1 by default in the engine (26.x), as clickhouse-connect reads it
        compress = params.get("enable_http_compression", self.engine.profile.get("enable_http_compression", "1"))
        if compress == "1" and "lz4" in self.headers.get("Accept-Encoding", ""):
            out, headers["Content-Encoding"] = lz4.frame.compress(out), "lz4"
        self._reply(200, out, headers)

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tracer.chhttp")
    parser.add_argument("path")
    parser.add_argument("--user", default="default")
    parser.add_argument("--password", default="")
    parser.add_argument("--config-file")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE", help="of the profile")
    args = parser.parse_args(argv)
    profile = dict(s.split("=", 1) for s in args.setting)
    Handler.engine = Engine(args.path, args.user, args.password, args.config_file, profile)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    sys.stdout.write(f"listening on http://127.0.0.1:{server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever()
    server.server_close()
    Handler.engine.keeper.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
