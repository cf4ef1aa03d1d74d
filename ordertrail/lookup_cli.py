"""``ordertrail lookup ORDER_ID [--server URL] [--json]``: the lookup of one order in a terminal.

Asks a running ``ordertrail run`` for ``GET {server}/v1/orders/{order_id}`` and prints what the
page shows: the explanation, what to tell the customer, the timeline with the next step, what was
noticed, and the incident. ``--json`` prints the server's answer as it came.

Server: ``--server``, else ``ORDERTRAIL_SERVER`` of the environment given to ``main``, else
``http://127.0.0.1:4320``. Exit status: 0 the order was found, 1 the server does not know it (its
explanation of what was checked is printed), 2 the server could not be reached or did not answer
as an ordertrail server does. Control characters in what the server sent are shown escaped, so
event data cannot drive the terminal.

Standard library only (urllib); command modules keep imports light (see ``ordertrail.cli``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, TextIO
from urllib.parse import quote, urlsplit

from tracer.lookup import KIND_LABELS, STATUS_LABELS, spoken_duration, wording
from tracer.times import parse_ts

ENV_SERVER: Final = "ORDERTRAIL_SERVER"
DEFAULT_SERVER: Final = "http://127.0.0.1:4320"
EXIT_FOUND: Final = 0
EXIT_UNKNOWN: Final = 1
EXIT_UNREACHABLE: Final = 2
_CONTROL: Final = {c: f"\\x{c:02x}" for c in [*range(32), 127] if c not in (9, 10)} | {
    c: f"\\u{c:04x}" for c in range(0x80, 0xA0)
}


class _Unusable(Exception):
    """The server could not be reached, or did not answer as an ordertrail server."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("order_id", metavar="ORDER_ID", help="the order to look up")
    parser.add_argument(
        "--server",
        metavar="URL",
        help=f"the ordertrail server (default: ${ENV_SERVER}, else {DEFAULT_SERVER})",
    )
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer as it came")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="how long to wait (10)")


def main(
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    environ = os.environ if environ is None else environ
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    server = (args.server or environ.get(ENV_SERVER) or DEFAULT_SERVER).rstrip("/")
    try:
        status, body = _get(server, args.order_id, args.timeout)
    except _Unusable as exc:
        err.write(f"error: {exc}\n")
        return EXIT_UNREACHABLE
    if args.json:
        out.write(json.dumps(body, indent=2) + "\n")
    elif status == 200:
        out.write(render(body, width=min(shutil.get_terminal_size().columns, 100)))
    else:
        err.write(_safe(str(body.get("explanation") or body.get("error") or f"order {args.order_id!r} is unknown")))
        err.write("\n")
    return EXIT_FOUND if status == 200 else EXIT_UNKNOWN


def _get(server: str, order_id: str, timeout: float) -> tuple[int, dict[str, Any]]:
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Unusable(f"--server: {server!r} is not a URL like {DEFAULT_SERVER}")
    url = f"{server}/v1/orders/{quote(order_id, safe='')}"
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "ordertrail-lookup"})
    try:
        with _opener(parts.hostname or "").open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
        if status != 404:
            raise _Unusable(f"the server at {server} answered {status}: {_short(raw)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        elif isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror.lower()
        raise _Unusable(
            f"cannot reach the ordertrail server at {server}: {reason}. Is `ordertrail run` running there? "
            f"Give its address with --server URL or {ENV_SERVER}."
        ) from None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict) or (status == 200 and "order_id" not in body):
        raise _Unusable(f"the server at {server} did not answer as an ordertrail server: {_short(raw)}")
    return status, body


def _opener(host: str) -> urllib.request.OpenerDirector:
    """Proxy settings of the environment apply, except to this machine (never behind a proxy)."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _short(raw: bytes) -> str:
    text = _safe(raw.decode("utf-8", "replace").strip())
    return text if len(text) <= 200 else text[:197] + "..."


def _safe(text: str) -> str:
    return text.translate(_CONTROL)


def _clock(ts: object) -> str:
    try:
        t = datetime.fromtimestamp(parse_ts(ts) / 1000, tz=UTC)
    except ValueError:
        return _safe(str(ts))
    return f"{t:%Y-%m-%d %H:%M:%S}"


def render(view: Mapping[str, Any], *, width: int = 100) -> str:
    """The order as terminal text: explanation, advice, timeline, what was noticed, incident."""

    def s(value: object) -> str:
        return _safe("" if value is None else str(value))

    def para(text: object, indent: str = "") -> list[str]:
        return textwrap.wrap(s(text), width=max(width, 40), initial_indent=indent, subsequent_indent=indent)

    status = view.get("status")
    lines = [f"Order {s(view.get('order_id'))}: {s(STATUS_LABELS.get(str(status), status))} ({s(status)})"]
    ids = [
        f"customer {s(view['customer_id'])}" if view.get("customer_id") else "",
        f"trace {s(view['trace_id'])}" if view.get("trace_id") else "",
        f"flow {s(view['journey'])}" if view.get("journey") else "",
    ]
    found_by = view.get("found_by")
    if isinstance(found_by, Mapping):  # looked up by another key of the order (stitching)
        ids.append(f"found by {s(found_by.get('key'))} {s(found_by.get('value'))}")
    lines += [" · ".join(i for i in ids if i), "", *para(view.get("explanation"))]
    if view.get("advice"):
        lines += ["", "What to tell the customer:", *para(view["advice"], "  ")]
    lines += ["", "Timeline (UTC)"]
    rows: list[tuple[str, str, str, str]] = []  # when, mark, what, where
    for hop in view.get("hops") or []:
        failed = hop.get("status") == "error"
        words = wording(str(hop.get("hop", "")))
        by = f" · {s(hop['service'])}" if hop.get("service") else ""
        what = words.failed if failed else words.done
        rows.append((_clock(hop.get("ts")), "FAILED" if failed else "ok", s(what), f"[{s(hop.get('hop'))}{by}]"))
    nxt = view.get("next")
    if nxt:
        expect = f"Next, {wording(str(nxt.get('hop', ''))).expect}"
        rows.append((_clock(nxt.get("due_at")), "due", s(expect), f"[{s(nxt.get('hop'))}, not yet seen]"))
    pad = min(max((len(r[2]) for r in rows), default=0), 48)
    lines += [f"  {when}  {mark:<6} {what:<{pad}}  {where}" for when, mark, what, where in rows]
    if not rows:
        lines.append("  nothing reported yet")
    findings = view.get("findings") or []
    if findings:
        lines += ["", "Noticed"]
        for f in findings:
            late = f.get("late_by_ms")
            after = f", {spoken_duration(int(late))} late" if isinstance(late, int) and late else ""
            kind = KIND_LABELS.get(str(f.get("kind")), f.get("kind"))
            lines.append(f"  {s(kind)}: {s(f.get('hop'))}, due {_clock(f.get('due_at'))}, {s(f.get('status'))}{after}")
    incident = view.get("incident")
    if incident:
        detail = (
            ", ".join(f"{s(k)}={s(v)}" for k, v in incident.items()) if isinstance(incident, Mapping) else s(incident)
        )
        lines += ["", "Part of a wider incident:", *para(detail, "  ")]
    return "\n".join(lines) + "\n"
