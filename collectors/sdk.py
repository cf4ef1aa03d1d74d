"""The Python SDK: ``track`` and ``hop`` report hop events (CONTRACT §1) to ordertrail in the background.

Contract with the service it observes — it must never break or block it:

* ``track(order_id, hop, ...)`` costs the caller a few attribute reads, one small tuple and one
  append to a bounded queue. It never blocks, never does I/O, never logs and never raises: a full
  queue drops the event (``dropped_full``), arguments it cannot use are counted (``invalid``).
* ``hop(order_id, hop_name)`` is a context manager (and a decorator) that opens an OpenTelemetry
  span carrying ``app.order.id`` and ``app.order.hop``, puts the order id in baggage for outgoing
  calls, and on exit reports the hop with the span's ids — ``status: error`` when the block raised
  an ``Exception``, which is recorded on the span and re-raised unchanged. A ``BaseException``
  that is not an ``Exception`` (KeyboardInterrupt, task cancellation) reports nothing: the hop
  neither happened nor failed.
* Trace ids: inside a valid span context (recording or propagated), ``track`` uses its trace id and
  reports the active span as the hop's ``parent_span_id`` (the hop is a point inside that span;
  the store derives the hop's own span id from its event id). Otherwise the trace id is derived
  from the order id (``tracer.model.derive_trace_id``). ``order_id=None`` takes the order id from
  baggage (``collectors.propagation.order_context``).
* A daemon thread turns records into JSON, batches up to ``batch`` events or ``flush_interval``,
  and hands NDJSON to a ``Transport`` (``HttpTransport``: ``POST {url}/v1/events``). It checks only
  what it must to write JSON (ids are strings, values encodable: else ``invalid``); the rules of
  CONTRACT §1 are the server's, whose per-item rejections are counted (``rejected_by_server``) and
  logged with the order, the hop and the reason. Validating locally too would double the sender's
  CPU in the host process for the same message.
  Connection errors, 5xx and 429 are retried with exponential backoff and jitter, honouring
  ``Retry-After``, at most ``RetryPolicy.attempts`` times, and no longer once the queue is full or
  shutdown's deadline has passed. Everything dropped is counted (``stats()``) and summarised in one
  ``logging`` warning per ``log_interval`` at most, from the sender thread only.

With ``ORDERTRAIL_BUS=kafka://host:port`` the sender produces the batches straight to the hops
topic instead (``collectors.bus_transport``: trace context in the record headers; the tracer
dead-letters what breaks CONTRACT §1, with the reason).

Configuration: explicit argument > ``ORDERTRAIL_*`` environment > default, read once per
``Client`` (``SdkConfig.load``). Unusable environment values are logged and replaced by the default
(an operations typo must not take the service down); unusable explicit arguments raise
``SdkConfigError`` from ``SdkConfig.load`` at startup.

Imports opentelemetry-api only (never the OpenTelemetry SDK), the tracer's model (and, for the
fake transport only, its event decoding), and ``collectors.propagation``; ``collectors.bus_transport``
(and with it the Kafka client) only when ``ORDERTRAIL_BUS`` asks for it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import http.client
import logging
import os
import random
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import ContextDecorator
from contextvars import Token
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Concatenate, Final, Literal, ParamSpec, Protocol, TypeVar

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    INVALID_SPAN,
    INVALID_SPAN_CONTEXT,
    Span,
    SpanContext,
    Status,
    StatusCode,
    TracerProvider,
)

from collectors.propagation import ORDER_ID_KEY, order_context, order_id_from
from collectors.spanmap import span_event_id
from tracer.errors import BodyError
from tracer.events import decode_batch
from tracer.model import (
    ATTRS,
    CUSTOMER_ID,
    EVENT_ID,
    HOP,
    JOURNEY,
    ORDER_ID,
    PARENT_SPAN_ID,
    SERVICE,
    SPAN_ID,
    STATUS,
    STATUS_ERROR,
    STATUS_OK,
    TRACE_ID,
    TS,
    derive_trace_id,
)
from tracer.times import DURATION_HELP, parse_duration

HOP_KEY: Final = "app.order.hop"  # span attribute naming the hop (CONTRACT §5, /v1/traces)
DEFAULT_URL: Final = "http://127.0.0.1:4320"  # the default --listen of ``ordertrail run``
_log = logging.getLogger("ordertrail.sdk")
P = ParamSpec("P")
R = TypeVar("R")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})


class SdkConfigError(ValueError):
    """An explicit SDK setting is unusable; names the setting, the value and what is allowed."""


# -- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SdkConfig:
    """One client's settings. Durations are seconds."""

    url: str = DEFAULT_URL
    service: str = ""
    disabled: bool = False
    buffer: int = 10_000  # events queued at most; more are dropped and counted
    batch: int = 500  # events per request at most
    flush_interval: float = 1.0  # a partial batch waits at most this long
    timeout: float = 5.0  # per request; also what shutdown at exit waits at most
    bus: str = ""  # kafka://host:port: produce straight to the hops topic instead of HTTP

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        url: str | None = None,
        bus: str | None = None,
        service: str | None = None,
        disabled: bool | None = None,
        buffer: int | None = None,
        batch: int | None = None,
        flush_interval: float | None = None,
        timeout: float | None = None,
    ) -> SdkConfig:
        """Explicit argument > ``ORDERTRAIL_*`` in ``environ`` (default ``os.environ``) > default."""
        env = os.environ if environ is None else environ
        d = cls()

        def pick(name: str, explicit: Any, var: str, parse: Callable[[str], Any], default: Any) -> Any:
            if explicit is not None:
                return _checked(name, explicit, parse)
            text = env.get(var)
            if text is None:
                return default
            try:
                return parse(text.strip())
            except ValueError as exc:
                _log.warning("ordertrail SDK: %s=%r is unusable: it %s; using %r", var, text, exc, default)
                return default

        try:
            service_default = _service(env.get("OTEL_SERVICE_NAME", ""))
        except ValueError:
            service_default = d.service
        buffer_n = pick("buffer", buffer, "ORDERTRAIL_BUFFER", _positive_int, d.buffer)
        return cls(
            url=pick("url", url, "ORDERTRAIL_URL", _url, d.url),
            bus=pick("bus", bus, "ORDERTRAIL_BUS", _bus, d.bus),
            service=pick("service", service, "ORDERTRAIL_SERVICE", _service, service_default),
            disabled=pick("disabled", disabled, "ORDERTRAIL_DISABLED", _flag, d.disabled),
            buffer=buffer_n,
            batch=min(buffer_n, pick("batch", batch, "ORDERTRAIL_BATCH", _positive_int, d.batch)),
            flush_interval=pick(
                "flush_interval", flush_interval, "ORDERTRAIL_FLUSH_INTERVAL", _seconds, d.flush_interval
            ),
            timeout=pick("timeout", timeout, "ORDERTRAIL_TIMEOUT", _seconds, d.timeout),
        )


def _checked(name: str, value: object, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(value if isinstance(value, str) else str(value))
    except ValueError as exc:
        raise SdkConfigError(f"{name}: {value!r} {exc}") from None


def _url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # not a number, or out of range
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError(f"must be an http(s) URL like {DEFAULT_URL}")
    return text.rstrip("/")


def _bus(text: str) -> str:
    if not text:
        return ""
    parts = urllib.parse.urlsplit(text)
    hosts = parts.netloc.split(",") if parts.scheme == "kafka" else []
    if not hosts or not all(h.rpartition(":")[0] and h.rpartition(":")[2].isdigit() for h in hosts):
        raise ValueError("must be kafka://host:port[,host:port...] (or empty for HTTP to ORDERTRAIL_URL)")
    return text


def _service(text: str) -> str:
    name = text.strip()
    if len(name) > 128 or not name.isprintable():
        raise ValueError("must be at most 128 printable characters")
    return name


def _flag(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError("must be one of 1, true, yes, on or 0, false, no, off")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise ValueError("must be a whole number above 0")
    return n


def _seconds(text: str) -> float:
    """``250ms``, ``1s``, ``2m`` or a bare number of seconds (``0.5``)."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text) / 1000
        except ValueError:
            raise ValueError(f"must be {DURATION_HELP}, or a number of seconds") from None
    if not 0 < value < 86_400:
        raise ValueError("must be above 0 and below a day")
    return value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a batch is re-sent (seconds)."""

    attempts: int = 5  # sends per batch, the first included
    base: float = 0.2  # the first backoff; doubles each time
    max_delay: float = 10.0
    max_retry_after: float = 60.0  # a server's Retry-After is honoured up to this

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Backoff before re-send number ``attempt`` (1-based): equal jitter, at least Retry-After."""
        full = min(self.max_delay, self.base * 2.0 ** (attempt - 1))
        jittered = full / 2 + rng.uniform(0, full / 2)
        if retry_after is not None:
            return min(self.max_retry_after, max(retry_after, jittered))
        return jittered


# -- transports ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a transport made of one batch: delivered (``ok``), worth another try, or refused."""

    outcome: Literal["ok", "retry", "fail"]
    accepted: int | None = None  # None: the server did not say
    rejected: tuple[tuple[int, str], ...] = ()  # (line index, reason) the server refused
    retry_after: float | None = None
    detail: str = ""


class Transport(Protocol):
    """Carries a batch (NDJSON, one hop event a line) to ordertrail. Called from one thread only."""

    def send(self, body: bytes) -> SendResult: ...

    def close(self) -> None: ...


class _Rejection(msgspec.Struct):
    index: int = -1
    error: str = ""


class _Reply(msgspec.Struct):
    accepted: int = 0
    rejected: list[_Rejection] = []


class HttpTransport:
    """``POST {url}/v1/events`` with http.client over one kept-alive connection."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self._url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/v1/events"
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def send(self, body: bytes) -> SendResult:
        headers = {"Content-Type": "application/x-ndjson", "User-Agent": "ordertrail-python-sdk"}
        for fresh in (self._conn is None, True):  # a kept-alive connection the server closed: one fresh try
            try:
                conn = self._connect()
                conn.request("POST", self._path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if fresh:
                    return SendResult("retry", detail=f"{self._url} is unreachable: {exc!r}")
                continue
            if response.will_close:
                self.close()
            return _result(response.status, response.getheader("Retry-After"), data)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn


def _result(status: int, retry_after: str | None, data: bytes) -> SendResult:
    said = data[:300].decode(errors="replace")
    if 200 <= status < 300:
        try:
            reply = msgspec.json.decode(data, type=_Reply)
        except msgspec.MsgspecError:
            return SendResult("ok")
        rejected = tuple((r.index, r.error) for r in reply.rejected)
        return SendResult("ok", accepted=reply.accepted, rejected=rejected)
    if status in (408, 429) or status >= 500:
        return SendResult("retry", retry_after=_retry_after(retry_after), detail=f"HTTP {status}: {said}")
    return SendResult("fail", detail=f"HTTP {status}: {said}")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _as_the_server(body: bytes) -> SendResult:
    try:
        batch = decode_batch(body)
    except BodyError as exc:
        return SendResult("fail", detail=f"HTTP 400: {exc}")
    return SendResult("ok", accepted=len(batch.events), rejected=tuple(batch.rejected))


def transport_for(config: SdkConfig) -> Transport:
    """The transport a configuration asks for: straight to Kafka when ``config.bus`` is set, else
    HTTP to ``config.url``."""
    if config.bus:
        from collectors.bus_transport import BusTransport

        return BusTransport(config.bus, timeout=config.timeout)
    return HttpTransport(config.url, timeout=config.timeout)


class MemoryTransport:
    """The fake transport for tests: keeps every body and answers from a script, then as the server
    would: ``ok`` with the events that break CONTRACT §1 rejected by the tracer's own rules."""

    def __init__(self, outcomes: Iterable[SendResult] = ()) -> None:
        self.bodies: list[bytes] = []  # every attempt, in order
        self.delivered: list[dict[str, Any]] = []  # the events of the attempts answered ok
        self.closed = False
        self._outcomes = deque(outcomes)
        self._lock = threading.Lock()

    def send(self, body: bytes) -> SendResult:
        with self._lock:
            self.bodies.append(body)
            result = self._outcomes.popleft() if self._outcomes else _as_the_server(body)
            if result.outcome == "ok":
                refused = {index for index, _ in result.rejected}
                lines = body.split(b"\n")
                self.delivered.extend(msgspec.json.decode(x) for i, x in enumerate(lines) if i not in refused)
        return result

    def close(self) -> None:
        self.closed = True


# -- the client ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SdkStats:
    """What happened to the events of one client so far."""

    sent: int = 0  # accepted by the server
    queued: int = 0  # waiting in the buffer now
    dropped_full: int = 0  # the buffer was full
    dropped_failed: int = 0  # their batch could not be delivered
    dropped_closed: int = 0  # reported after shutdown
    invalid: int = 0  # broke CONTRACT §1 or were unusable arguments; never sent
    retries: int = 0  # batch re-sends
    rejected_by_server: int = 0  # refused one by one in a 202 answer


# order_id, hop, ts, status, customer_id, journey, attrs, trace_id, span_id, parent_span_id (0: none)
_Record = tuple[Any, Any, Any, Any, Any, Any, Any, int, int, int]


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


_current_span = trace.get_current_span


class Client:
    """A configured SDK: the queue, the sender thread (started on first use) and the counters."""

    def __init__(
        self,
        config: SdkConfig | None = None,
        *,
        transport: Transport | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], int] = _wall_ms,
        tracer_provider: TracerProvider | None = None,
        log_interval: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config if config is not None else SdkConfig.load()
        self._transport = transport if transport is not None else transport_for(self.config)
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._tracer = trace.get_tracer("ordertrail", tracer_provider=tracer_provider)
        self._log_interval = log_interval
        self._rng = rng or random.Random()
        self._capacity = self.config.buffer
        self._batch = self.config.batch
        self._accepting = not self.config.disabled
        self._queue: deque[_Record | dict[str, Any] | _Flush] = deque()
        self._lock = threading.RLock()  # re-entrant: track() from a signal handler must not deadlock
        self._wake = threading.Event()
        self._halt = threading.Event()  # shutdown's deadline passed: stop waiting and retrying
        self._deadline: float | None = None  # set by shutdown
        self._thread: threading.Thread | None = None
        self._started = False
        self._at_exit: Callable[[], None] | None = None
        self._sent = self._dropped_full = self._dropped_failed = self._dropped_closed = 0
        self._invalid = self._retries = self._rejected = 0
        self._reported = SdkStats()
        self._reported_at = time.monotonic()
        self._last_problem: dict[str, str] = {}
        weak = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: _call(weak))

    # -- the caller's side: cheap, never raises ------------------------------------------------

    def track(
        self,
        /,
        order_id: str | int | None,
        hop: str,
        *,
        status: str = STATUS_OK,
        customer_id: str | int | None = None,
        journey: str | None = None,
        ts: int | float | str | datetime | None = None,
        attrs: Mapping[str, object] | None = None,
        **more_attrs: object,
    ) -> None:
        """Report that ``hop`` happened to ``order_id`` (now, or at ``ts``: epoch ms, RFC 3339 or a
        datetime). ``order_id=None``: the one in baggage. Keyword attributes join ``attrs`` and win
        over it. Returns at once; never raises."""
        if not self._accepting:
            self._refused()
            return
        try:
            span = _current_span().get_span_context()
            if order_id is None:
                order_id = order_id_from()
            if attrs:
                more_attrs = {**attrs, **more_attrs}
            when = self._clock() if ts is None else ts
            if span.is_valid:
                record = (order_id, hop, when, status, customer_id, journey, more_attrs, span.trace_id, 0, span.span_id)
            else:
                record = (order_id, hop, when, status, customer_id, journey, more_attrs, 0, 0, 0)
        except Exception as exc:
            self._unusable(exc)
            return
        self._enqueue(record)

    def emit(self, event: Mapping[str, Any]) -> None:
        """Report one ready-made CONTRACT §1 event (a JSON object as a dict). Never raises."""
        if not self._accepting:
            self._refused()
            return
        try:
            self._enqueue(dict(event))
        except Exception as exc:
            self._unusable(exc)

    def hop(
        self,
        order_id: str | int | None,
        hop_name: str,
        *,
        customer_id: str | int | None = None,
        journey: str | None = None,
        **attrs: object,
    ) -> HopScope:
        """A span for ``hop_name`` around a block, reported as a hop when the block ends."""
        return HopScope(self, order_id, hop_name, customer_id=customer_id, journey=journey, attrs=attrs)

    def _hop_ended(self, scope: HopScope, own: SpanContext, parent: SpanContext) -> None:
        """The hop of a ``HopScope`` with its span's ids; a span that only carries its parent's
        context along (no OpenTelemetry SDK installed) reports the parent, not a span of its own."""
        if not self._accepting:
            self._refused()
            return
        trace_id = own.trace_id if own.is_valid else parent.trace_id if parent.is_valid else 0
        span_id = own.span_id if own.is_valid and own.span_id != parent.span_id else 0
        parent_id = parent.span_id if parent.is_valid else 0
        when = self._clock()
        journey = scope.journey
        self._enqueue(
            (
                scope.order_id,
                scope.hop,
                when,
                scope.status,
                scope.customer_id,
                journey,
                scope.attrs,
                trace_id,
                span_id,
                parent_id,
            )
        )

    def _enqueue(self, item: _Record | dict[str, Any]) -> None:
        queue = self._queue
        if len(queue) >= self._capacity:
            with self._lock:
                self._dropped_full += 1
            return
        queue.append(item)
        if not self._started:
            self._start()
        elif len(queue) >= self._batch and not self._wake.is_set():
            self._wake.set()

    def _refused(self) -> None:
        if not self.config.disabled:
            with self._lock:
                self._dropped_closed += 1

    def _unusable(self, exc: BaseException) -> None:
        with self._lock:
            self._invalid += 1
        with contextlib.suppress(Exception):
            self._last_problem["invalid"] = f"unusable arguments: {exc!r}"[:300]

    # -- control -------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event reported before the call is sent or dropped; False on timeout."""
        if not self._started or self._thread is None or not self._thread.is_alive():
            return not self._queue
        marker = _Flush()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop accepting events, send what is queued within ``timeout`` (default: the config's),
        stop the sender and close the transport. False when the sender was still busy at the
        deadline; what it gave up is counted in ``stats()``."""
        wait = self.config.timeout if timeout is None else timeout
        with self._lock:
            self._accepting = False
            if self._deadline is None:
                self._deadline = time.monotonic() + wait
            deadline = self._deadline
            thread = self._thread
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)
            self._at_exit = None
        if thread is None:
            self._close_transport()
            return not self._queue
        self._wake.set()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            self._halt.set()
            thread.join(0.05)
        return not thread.is_alive() and not self._queue

    def stats(self) -> SdkStats:
        return SdkStats(
            sent=self._sent,
            queued=len(self._queue),
            dropped_full=self._dropped_full,
            dropped_failed=self._dropped_failed,
            dropped_closed=self._dropped_closed,
            invalid=self._invalid,
            retries=self._retries,
            rejected_by_server=self._rejected,
        )

    def _start(self) -> None:
        with self._lock:
            if self._started or not self._accepting:
                return
            thread = threading.Thread(target=self._run, name="ordertrail-sdk-sender", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # e.g. at interpreter shutdown: stop accepting, count the rest
                self._accepting = False
                self._last_problem["sender"] = f"the sender thread could not start: {exc}"
                return
            self._thread = thread
            self._started = True
            weak = weakref.WeakMethod(self.shutdown)
            self._at_exit = lambda: _call(weak)
            atexit.register(self._at_exit)

    def _after_fork(self) -> None:
        """In a forked child the sender thread does not exist: start afresh on first use."""
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._queue.clear()  # the parent sends these
        self._thread = None
        self._started = False
        self._at_exit = None

    # -- the sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if self._deadline is None:
                    self._wake.wait(self.config.flush_interval)
                    self._wake.clear()
                self._drain()
                self._report()
            except Exception as exc:  # the sender must outlive its own bugs
                self._last_problem["sender"] = repr(exc)[:300]
                self._halt.wait(self.config.flush_interval)
            if self._deadline is not None and (not self._queue or self._halt.is_set() or self._past_deadline()):
                break
        with self._lock:
            for item in self._queue:
                if isinstance(item, _Flush):
                    item.done.set()
                else:
                    self._dropped_failed += 1
            self._queue.clear()
        self._report(final=True)
        self._close_transport()

    def _drain(self) -> None:
        queue = self._queue
        while queue and not self._halt.is_set() and not self._past_deadline():
            records: list[_Record | dict[str, Any]] = []
            marker = None
            while queue and len(records) < self._batch:
                item = queue.popleft()
                if isinstance(item, _Flush):
                    marker = item
                    break
                records.append(item)
            if records:
                self._deliver(records)
            if marker is not None:
                marker.done.set()

    def _deliver(self, records: list[_Record | dict[str, Any]]) -> None:
        wires: list[dict[str, object]] = []
        lines: list[bytes] = []
        for record in records:
            try:
                wire = self._wire(record)
                lines.append(_ENCODE(wire))
                wires.append(wire)
            except Exception as exc:  # not JSON-able, or no order id
                with self._lock:  # callers count unusable arguments too
                    self._invalid += 1
                self._last_problem["invalid"] = str(exc)[:300] if isinstance(exc, ValueError) else repr(exc)[:300]
        if not wires:
            return
        body = b"\n".join(lines)
        attempt = 0
        while True:
            try:
                result = self._transport.send(body)
            except Exception as exc:  # a transport bug is one more failed attempt
                result = SendResult("retry", detail=repr(exc))
            if result.outcome == "ok":
                self._delivered(result, wires)
                return
            attempt += 1
            give_up = result.outcome == "fail" or attempt >= self._retry.attempts or self._halt.is_set()
            if give_up or len(self._queue) >= self._capacity or self._past_deadline():
                self._dropped_failed += len(wires)
                self._last_problem["failed"] = result.detail[:300]
                return
            self._retries += 1
            delay = self._retry.delay(attempt, result.retry_after, self._rng)
            if self._deadline is not None:
                delay = min(delay, max(0.0, self._deadline - time.monotonic()))
            self._halt.wait(delay)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _delivered(self, result: SendResult, wires: list[dict[str, object]]) -> None:
        self._rejected += len(result.rejected)
        self._sent += result.accepted if result.accepted is not None else len(wires) - len(result.rejected)
        if result.rejected:
            index, reason = result.rejected[0]
            wire = wires[index] if 0 <= index < len(wires) else {}
            self._last_problem["rejected"] = f"{wire.get(ORDER_ID)!r} {wire.get(HOP)!r}: {reason}"[:300]

    def _wire(self, record: _Record | dict[str, Any]) -> dict[str, object]:
        """The CONTRACT §1 object of a record. Raises ValueError when it has no usable order id or
        hop. The event id is left to the server, which derives it from (order_id, hop, ts), except
        for a hop with a span of its own: derived from (trace id, span id) as ``/v1/traces`` does."""
        if isinstance(record, dict):
            if self.config.service and SERVICE not in record:
                record[SERVICE] = self.config.service
            return record
        order_id, hop, ts, status, customer_id, journey, attrs, trace_id, span_id, parent = record
        order_id = _text_id(order_id)
        if not isinstance(order_id, str) or not isinstance(hop, str):
            given = "none given and none in baggage (app.order.id)" if order_id is None else f"{order_id!r}"
            raise ValueError(f"order_id: {given}, hop: {hop!r}; both must be strings")
        wire = {ORDER_ID: order_id, HOP: hop, TS: _ts(ts)}
        wire[TRACE_ID] = f"{trace_id:032x}" if trace_id else derive_trace_id(order_id)
        if span_id:  # hop(): its own span, so the same event as that span exported over OTLP
            wire[SPAN_ID] = span_hex = f"{span_id:016x}"
            wire[EVENT_ID] = span_event_id(str(wire[TRACE_ID]), span_hex)
        if parent:
            wire[PARENT_SPAN_ID] = f"{parent:016x}"
        if self.config.service:
            wire[SERVICE] = self.config.service
        if status != STATUS_OK:
            wire[STATUS] = status
        if customer_id is not None:
            wire[CUSTOMER_ID] = _text_id(customer_id)
        if journey is not None:
            wire[JOURNEY] = journey
        if attrs:
            wire[ATTRS] = {str(k): _attr_text(v) for k, v in attrs.items()}
        return wire

    def _report(self, *, final: bool = False) -> None:
        """At most one warning per log interval, summing up what was dropped since the last one."""
        now = time.monotonic()
        if not final and now - self._reported_at < self._log_interval:
            return
        was, current = self._reported, self.stats()
        self._reported, self._reported_at = current, now
        parts = []
        for name, what, key in (
            ("dropped_full", f"dropped, the buffer was full (ORDERTRAIL_BUFFER={self._capacity})", ""),
            ("dropped_failed", f"undeliverable to {self.config.bus or self.config.url}", "failed"),
            ("invalid", "invalid", "invalid"),
            ("rejected_by_server", "rejected by the server", "rejected"),
            ("dropped_closed", "reported after shutdown", ""),
        ):
            n = getattr(current, name) - getattr(was, name)
            if n:
                last = self._last_problem.get(key) if key else None
                parts.append(f"{n} {what}" + (f" (last: {last})" if last else ""))
        if self._last_problem.get("sender"):
            parts.append(f"the sender hit a bug: {self._last_problem.pop('sender')}")
        if parts:
            _log.warning("ordertrail SDK: hop events lost: %s", "; ".join(parts))

    def _close_transport(self) -> None:
        try:
            self._transport.close()
        except Exception as exc:
            _log.debug("ordertrail SDK: closing the transport failed: %r", exc)


_ENCODE: Final = msgspec.json.Encoder().encode


def _call(weak: weakref.WeakMethod[Any]) -> None:
    method = weak()
    if method is not None:
        method()


def _text_id(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _ts(value: object) -> object:
    if isinstance(value, datetime):
        return int(value.timestamp()) * 1000 + value.microsecond // 1000  # no float rounding
    if isinstance(value, float):
        return int(value)
    return value


def _attr_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


# -- the hop context manager --------------------------------------------------------------------


class HopScope(ContextDecorator):
    """``with client.hop(order_id, "payment.authorized") as h:`` — ``h.span`` is the span,
    ``h.attrs`` the hop's attributes (add to them in the block), ``h.status`` may be set to
    ``"error"`` without raising. As a decorator each call gets a fresh scope; with
    ``order_id=None`` the order id comes from baggage at call time."""

    def __init__(
        self,
        client: Client | None,
        order_id: str | int | None,
        hop: str,
        *,
        customer_id: str | int | None = None,
        journey: str | None = None,
        attrs: dict[str, object] | None = None,
    ) -> None:
        self.client = client  # None: the default client at the time the block starts
        self.order_id = order_id
        self.hop = hop
        self.customer_id = customer_id
        self.journey = journey
        self.attrs: dict[str, object] = dict(attrs or {})
        self.status = STATUS_OK
        self.span: Span = INVALID_SPAN
        self._parent = INVALID_SPAN_CONTEXT
        self._token: Token[Context] | None = None

    def _recreate_cm(self) -> HopScope:
        return HopScope(
            self.client, self.order_id, self.hop, customer_id=self.customer_id, journey=self.journey, attrs=self.attrs
        )

    def __enter__(self) -> HopScope:
        try:
            client = self.client = self.client or get_client()
            ctx = otel_context.get_current()
            if self.order_id is None:
                self.order_id = order_id_from(ctx)
            self._parent = trace.get_current_span(ctx).get_span_context()
            order_id = _text_id(self.order_id)
            attributes = {k: _attr_text(v) for k, v in self.attrs.items()}
            attributes[HOP_KEY] = str(self.hop)
            if order_id is not None:
                attributes[ORDER_ID_KEY] = str(order_id)
            self.span = client._tracer.start_span(str(self.hop), context=ctx, attributes=attributes)
            ctx = trace.set_span_in_context(self.span, ctx)
            if isinstance(order_id, str):
                ctx = order_context(order_id, ctx)
            self._token = otel_context.attach(ctx)
        except Exception as exc:
            _log.debug("ordertrail SDK: could not open the span of hop %r: %r", self.hop, exc)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        try:
            self._close(exc)
        except Exception as problem:  # never replace or hide the business exception
            _log.debug("ordertrail SDK: could not close hop %r: %r", self.hop, problem)
        return False

    def _close(self, exc: BaseException | None) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None
        if isinstance(exc, Exception):
            self.status = STATUS_ERROR
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
        self.span.end()
        if self.client is not None and (exc is None or isinstance(exc, Exception)):
            self.client._hop_ended(self, self.span.get_span_context(), self._parent)


# -- the default client -------------------------------------------------------------------------

_default: Client | None = None
_default_lock = threading.Lock()


def get_client() -> Client:
    """The client ``track`` and ``hop`` use: created on first use from ``ORDERTRAIL_*``."""
    global _default
    client = _default
    if client is None:
        with _default_lock:
            if _default is None:
                try:
                    _default = Client()
                except Exception as exc:  # track() must not raise even then: report nothing
                    _log.warning("ordertrail SDK: could not start (%r); hop events are not reported", exc)
                    _default = Client(SdkConfig(disabled=True))
            client = _default
    return client


def configure(config: SdkConfig | None = None, *, transport: Transport | None = None) -> Client:
    """Replace the default client with one built from ``config`` (default: ``SdkConfig.load()``),
    e.g. ``configure(SdkConfig.load(service="payments"))``. The old one is shut down."""
    global _default
    client = Client(config, transport=transport)
    with _default_lock:
        old, _default = _default, client
    if old is not None:
        old.shutdown()
    return client


def _via_default(method: Callable[Concatenate[Client, P], R]) -> Callable[P, R]:
    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(_default or get_client(), *args, **kwargs)

    return call


track = _via_default(Client.track)  # the default client's track: returns at once, never raises


def hop(
    order_id: str | int | None,
    hop_name: str,
    *,
    customer_id: str | int | None = None,
    journey: str | None = None,
    **attrs: object,
) -> HopScope:
    """A span around a block, reported as a hop through the default client (see ``HopScope``)."""
    return HopScope(None, order_id, hop_name, customer_id=customer_id, journey=journey, attrs=attrs)


def flush(timeout: float | None = None) -> bool:
    """Wait until the default client has sent or dropped everything reported so far."""
    return True if _default is None else _default.flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop the default client (also done at interpreter exit)."""
    return True if _default is None else _default.shutdown(timeout)


def stats() -> SdkStats:
    """The default client's counters."""
    return SdkStats() if _default is None else _default.stats()


__all__ = [
    "DEFAULT_URL",
    "HOP_KEY",
    "Client",
    "HopScope",
    "HttpTransport",
    "MemoryTransport",
    "RetryPolicy",
    "SdkConfig",
    "SdkConfigError",
    "SdkStats",
    "SendResult",
    "Transport",
    "configure",
    "flush",
    "get_client",
    "hop",
    "shutdown",
    "stats",
    "track",
    "transport_for",
]
