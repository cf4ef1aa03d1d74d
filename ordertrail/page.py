"""The lookup page at ``/``: server-rendered HTML, no build step, no external assets.

``render_page(view, query=…, error=…, searched=…)`` fills ``templates/lookup.html`` (a
``string.Template`` with inline CSS) with one of: an order (``view``, the object of
``tracer.lookup.build_order_view``) — its explanation first, what to tell the customer, the next
step, a vertical timeline, findings and the incident; search results (``searched``, rows of
``tracer.lookup.search_views``); a message (``error``, e.g. the 404 explanation); or nothing yet.

Everything that came from events or the request is HTML-escaped here, in one place (``_e``);
links carry values percent-encoded, then escaped. Reads no clock and no store: the caller decides
what to show.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import quote

from tracer.lookup import KIND_LABELS, STATUS_LABELS, spoken_duration, wording
from tracer.times import parse_ts


@cache
def _template() -> Template:
    return Template(resources.files("ordertrail").joinpath("templates/lookup.html").read_text(encoding="utf-8"))


def render_page(
    view: Mapping[str, Any] | None,
    *,
    query: str,
    error: str | None = None,
    searched: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The whole HTML document for one request of the lookup page."""
    parts: list[str] = []
    if error:
        parts.append(f'<div class="alert" role="alert"><p>{_e(error)}</p></div>')
    if searched is not None:
        parts.append(_search_results(searched, query))
    if view is not None:
        parts.append(_order(view))
    if not parts:
        parts.append(
            '<p class="hint">Look up an order by its number to see what happened to it, step by step, and what to '
            "tell the customer. A customer id or a trace id lists the matching orders.</p>"
        )
    title = f"Order {view.get('order_id', '')} · ordertrail" if view is not None else "Order lookup · ordertrail"
    return _template().substitute(title=_e(title), query=_e(query), content="\n".join(parts))


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _link(value: object) -> str:
    return f'<a href="/?q={_e(quote(str(value), safe=""))}">{_e(value)}</a>'


def _badge(status: object, label: object = None) -> str:
    key = str(status) if str(status).replace("_", "").isalnum() else "unknown"
    text = label if label is not None else STATUS_LABELS.get(str(status), status)
    return f'<span class="badge s-{_e(key)}">{_e(text)}</span>'


def _when(ts: object) -> str:
    """An RFC 3339 time as ``22 Nov 2026 10:02:03 UTC`` inside a ``<time>`` element."""
    try:
        ms = parse_ts(ts)
    except ValueError:
        return _e(ts)
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return f'<time datetime="{_e(ts)}">{t.day} {t:%b %Y %H:%M:%S} UTC</time>'


def _order(view: Mapping[str, Any]) -> str:
    status = view.get("status")
    meta = [
        f"<li>Customer: {_link(view['customer_id'])}</li>" if view.get("customer_id") else "",
        f"<li>Trace id: {_link(view['trace_id'])}</li>" if view.get("trace_id") else "",
        f"<li>Flow: <code>{_e(view['journey'])}</code></li>" if view.get("journey") else "",
    ]
    found_by = view.get("found_by")
    if isinstance(found_by, Mapping):  # looked up by another key of the order (stitching)
        meta.append(f"<li>Found by {_e(found_by.get('key'))} <code>{_e(found_by.get('value'))}</code></li>")
    out = [
        f"<h1>Order {_e(view.get('order_id'))} {_badge(status)}</h1>",
        f'<ul class="meta">{"".join(meta)}</ul>',
        f'<p class="explanation">{_e(view.get("explanation"))}</p>',
    ]
    if view.get("advice"):
        out.append(f'<div class="advice"><strong>What to tell the customer</strong>{_e(view["advice"])}</div>')
    out.append(_timeline(view.get("hops") or [], view.get("next")))
    out.append(_findings(view.get("findings") or []))
    if view.get("incident"):
        out.append(_incident(view["incident"]))
    return "\n".join(out)


def _timeline(hops: Sequence[Mapping[str, Any]], nxt: Mapping[str, Any] | None) -> str:
    items = []
    for hop in hops:
        failed = hop.get("status") == "error"
        words = wording(str(hop.get("hop", "")))
        what = f"{words.failed}" if failed else words.done
        service = f" · by <code>{_e(hop['service'])}</code>" if hop.get("service") else ""
        flag = f" {_badge('error', 'failed')}" if failed else ""
        items.append(
            f'<li class="{"error" if failed else "ok"}"><span class="when">{_when(hop.get("ts"))}</span>'
            f'<span class="what">{_e(what)}{flag}</span>'
            f'<span class="hint"><code>{_e(hop.get("hop"))}</code>{service}</span></li>'
        )
    if nxt:
        expect = wording(str(nxt.get("hop", ""))).expect
        items.append(
            f'<li class="next"><span class="when">Due by {_when(nxt.get("due_at"))}</span>'
            f'<span class="what">Next, {_e(expect)}</span>'
            f'<span class="hint"><code>{_e(nxt.get("hop"))}</code> · not yet seen</span></li>'
        )
    if not items:
        return "<h2>Timeline</h2><p>No steps have been reported for this order.</p>"
    return f'<h2>Timeline</h2><ol class="timeline">{"".join(items)}</ol>'


def _findings(findings: Sequence[Mapping[str, Any]]) -> str:
    if not findings:
        return ""
    rows = []
    for f in findings:
        late = f.get("late_by_ms")
        late_text = spoken_duration(int(late)) if isinstance(late, int | float) and late else "—"
        rows.append(
            f"<tr><td>{_e(KIND_LABELS.get(str(f.get('kind')), f.get('kind')))}</td>"
            f"<td><code>{_e(f.get('hop'))}</code></td><td>{_when(f.get('due_at'))}</td>"
            f"<td>{_badge(f.get('status'), f.get('status'))}</td><td>{_e(late_text)}</td></tr>"
        )
    return "<h2>What ordertrail noticed</h2>" + _table(("Problem", "Step", "Due by", "Status", "Late by"), rows)


def _incident(incident: Any) -> str:
    if not isinstance(incident, Mapping):
        return f"<h2>Wider incident</h2><p>{_e(incident)}</p>"
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in incident.items())
    return f"<h2>Wider incident</h2><p>This order is part of a wider problem affecting other orders.</p><dl>{rows}</dl>"


def _search_results(rows: Sequence[Mapping[str, Any]], query: str) -> str:
    if not rows:
        return (
            f"<h1>No orders found for {_e(query)}</h1><p>Check the number, customer id or trace id and try again.</p>"
        )
    items = "".join(
        f"<tr><td>{_link(r.get('order_id'))}</td><td>{_badge(r.get('status'))}</td>"
        f"<td>{_e(r.get('summary'))}</td><td>{_when(r.get('last_ts'))}</td></tr>"
        for r in rows
    )
    n = len(rows)
    heading = f"<h1>{n} order{'s' if n != 1 else ''} for {_e(query)}</h1>"
    return heading + _table(("Order", "Status", "Latest", "Last activity"), [items])


def _table(headers: Sequence[str], rows: Sequence[str]) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
