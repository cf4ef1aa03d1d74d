"""The declarative mapping of a tap: which field of a log line or business message is the order id,
the hop, the time, and so on (docs/taps.md).

A mapping file is YAML, one entry per hop event field::

    order_id: order.id                      # a dotted path into the JSON object
    hop:                                    # fixed (value: …) or from a field, through a value map
      field: type
      map: {OrderPlaced: checkout.placed, PaymentOk: payment.authorized}
      unmapped: skip                        # values not in the map: skip (default), reject or keep
    ts: {field: time, format: rfc3339}      # rfc3339, epoch_ms, epoch_s, epoch_us, epoch_ns or a strptime pattern
    status: {field: level, map: {ERROR: error}, default: ok}
    service: {value: legacy-billing}
    customer_id: customer.id
    attrs: [amount, {currency: money.currency}]   # attribute name -> path (a bare path names itself)

``load_mapping`` / ``parse_mapping`` return an immutable ``Mapping`` or raise ``MappingError``
listing every problem, each located by file and field. ``Mapping.apply(obj)`` turns one parsed
JSON object into a ``HopEvent`` (``None`` when the line is not a hop: a hop value the map skips),
or raises ``EventError`` naming the mapping field, the source path and the value.

Paths starting with ``@`` name facts about the record rather than its JSON: ``@key`` and
``@timestamp`` of a Kafka record (``extra`` of ``apply``).

This module imports only the tracer's model and validation rules, and PyYAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from tracer.errors import ABSENT, EventError, TracerError, unknown_keys
from tracer.events import validate
from tracer.model import (
    CUSTOMER_ID,
    EVENT_ID,
    HOP,
    JOURNEY,
    ORDER_ID,
    PARENT_SPAN_ID,
    SERVICE,
    SPAN_ID,
    STATUS,
    TRACE_ID,
    TS,
    HopEvent,
)
from tracer.times import parse_ts

FIELDS: Final = (ORDER_ID, HOP, TS, EVENT_ID, TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SERVICE, STATUS, JOURNEY, CUSTOMER_ID)
_TOP_KEYS: Final = (*FIELDS, "attrs")
_SPEC_KEYS: Final = ("field", "value", "map", "default", "unmapped", "format", "tz")
TS_FORMATS: Final = ("auto", "rfc3339", "epoch_ms", "epoch_s", "epoch_us", "epoch_ns")
_EPOCH_SCALE: Final = {"epoch_ms": 1.0, "epoch_s": 1000.0, "epoch_us": 0.001, "epoch_ns": 0.000001}
_UNMAPPED: Final = ("skip", "reject", "keep")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_PATH_RE: Final = re.compile(r"@?[^.\s][^.]*(\.[^.]+)*")


class MappingError(TracerError, ValueError):
    """The mapping file is unusable. ``problems`` lists every problem, each located."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Where one hop event field comes from: a path into the record, or a fixed value."""

    name: str
    path: tuple[str, ...] = ()  # empty: the fixed ``value``
    value: str | None = None
    values: AnyMapping[str, str] | None = None  # the value map, source text -> field value
    default: str | None = None
    unmapped: str = "reject"
    ts_format: str = "auto"
    tz: tzinfo = UTC

    @property
    def source(self) -> str:
        return ".".join(self.path) if self.path else f"value {self.value!r}"


@dataclass(frozen=True, slots=True)
class Mapping:
    """A validated mapping: hop event fields and attributes, each with where it comes from."""

    fields: tuple[FieldSpec, ...]
    attrs: tuple[tuple[str, tuple[str, ...]], ...]
    source: str = "<mapping>"

    def apply(self, obj: object, extra: AnyMapping[str, object] | None = None) -> HopEvent | None:
        """One record as a hop event, or None when its hop value is one the map skips.
        Raises EventError naming the field, where it was read from, and the value."""
        if not isinstance(obj, dict):
            raise EventError("line", _show(obj), "must be a JSON object")
        out: dict[str, object] = {}
        for spec in self.fields:
            raw = _lookup(obj, spec.path, extra) if spec.path else spec.value
            if raw is ABSENT or raw is None:
                if spec.default is None:
                    if spec.name in (ORDER_ID, HOP, TS):
                        raise EventError(f"{spec.name} (from {spec.source})", ABSENT, "is missing from the record")
                    continue
                raw = spec.default
            if spec.name == TS:
                out[TS] = _ts(spec, raw)
                continue
            if isinstance(raw, dict | list) or (isinstance(raw, float) and not raw.is_integer()):
                raise EventError(f"{spec.name} (from {spec.source})", raw, "must be a string or a whole number")
            text = _text(raw)
            if spec.values is not None:
                mapped = spec.values.get(text)
                if mapped is None:
                    if spec.default is not None and spec.unmapped == "reject" and spec.name != HOP:
                        mapped = spec.default
                    elif spec.unmapped == "skip":
                        return None
                    elif spec.unmapped == "reject":
                        allowed = ", ".join(map(repr, list(spec.values)[:10]))
                        raise EventError(f"{spec.name} (from {spec.source})", text, f"is not in the map ({allowed})")
                    else:
                        mapped = text
                text = mapped
            out[spec.name] = text
        if self.attrs:
            attrs: dict[str, str] = {}
            for name, path in self.attrs:
                raw = _lookup(obj, path, extra)
                if raw is ABSENT or raw is None:
                    continue
                attrs[name] = raw if isinstance(raw, str) else _text(raw)
            if attrs:
                out["attrs"] = attrs
        return validate(out)


def load_mapping(path: str | Path) -> Mapping:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError([f"{p}: cannot be read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise MappingError([f"{p}: is not UTF-8 text: {exc.reason} at byte {exc.start}"]) from None
    return parse_mapping(text, str(p))


def parse_mapping(text: str, source: str = "<mapping>") -> Mapping:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        raise MappingError([f"{source}:{where} not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from None
    if not isinstance(doc, dict):
        raise MappingError([f"{source}: must be a mapping of hop event fields, e.g. 'order_id: order.id'"])
    problems: list[str] = []
    problems += unknown_keys(source, doc, _TOP_KEYS)
    for required in (ORDER_ID, HOP, TS):
        if required not in doc:
            problems.append(f"{source}: field {required!r} is required (where the {required} comes from)")
    fields = [
        spec
        for name in FIELDS
        if name in doc
        for spec in [_field(name, doc[name], f"{source}: field {name!r}", problems)]
        if spec is not None
    ]
    attrs = _attrs(doc.get("attrs"), f"{source}: field 'attrs'", problems)
    if problems:
        raise MappingError(problems)
    return Mapping(tuple(fields), attrs, source)


def _field(name: str, spec: object, at: str, problems: list[str]) -> FieldSpec | None:
    if isinstance(spec, str):
        spec = {"field": spec}
    if not isinstance(spec, dict):
        problems.append(f"{at}: {spec!r} must be a path (e.g. order.id) or a mapping with 'field' or 'value'")
        return None
    before = len(problems)
    problems += unknown_keys(at, spec, _SPEC_KEYS if name == TS else _SPEC_KEYS[:5], "key")  # format, tz: ts only
    has_field, has_value = "field" in spec, "value" in spec
    if has_field == has_value:
        problems.append(f"{at}: give exactly one of 'field' (a path into the record) or 'value' (a fixed value)")
        return None
    path: tuple[str, ...] = ()
    value = None
    if has_field:
        path = _path(spec["field"], f"{at}, key 'field'", problems)
    elif isinstance(spec["value"], str | int) and not isinstance(spec["value"], bool):
        value = str(spec["value"])
    else:
        problems.append(f"{at}, key 'value': {spec['value']!r} must be text")
    values = None
    if "map" in spec:
        raw = spec["map"]
        if not isinstance(raw, dict) or not raw or not all(isinstance(v, str) for v in raw.values()):
            problems.append(f"{at}, key 'map': {raw!r} must be a non-empty mapping of source value -> {name}")
        else:
            values = {_text(k): v for k, v in raw.items()}
    default = spec.get("default")
    if default is not None and not isinstance(default, str | int):
        problems.append(f"{at}, key 'default': {default!r} must be text")
    unmapped = spec.get("unmapped", "skip" if name == HOP else "reject")
    if unmapped not in _UNMAPPED:
        problems.append(f"{at}, key 'unmapped': {unmapped!r} must be one of {', '.join(_UNMAPPED)}")
    elif "unmapped" in spec and values is None:
        problems.append(f"{at}, key 'unmapped': needs a 'map'")
    ts_format = spec.get("format", "auto")
    if not isinstance(ts_format, str) or (ts_format not in TS_FORMATS and "%" not in ts_format):
        problems.append(
            f"{at}, key 'format': {ts_format!r} must be one of {', '.join(TS_FORMATS)} or a strptime pattern "
            "such as '%Y-%m-%d %H:%M:%S,%f'"
        )
    zone = _zone(spec.get("tz", "UTC"), f"{at}, key 'tz'", problems)
    if len(problems) > before:
        return None
    fixed = value if values is None or value is None else values.get(value, value)
    return FieldSpec(
        name,
        path,
        fixed,
        values if has_field else None,
        None if default is None else str(default),
        str(unmapped),
        str(ts_format),
        zone,
    )


def _path(raw: object, at: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(raw, str) or _PATH_RE.fullmatch(raw) is None:
        problems.append(f"{at}: {raw!r} must be a dotted path into the record, e.g. order.id, or @key")
        return ()
    if raw.startswith("@") and raw not in ("@key", "@timestamp"):
        problems.append(f"{at}: {raw!r} is not known; record facts are @key and @timestamp (Kafka taps)")
        return ()
    return tuple(raw.split("."))


def _attrs(raw: object, at: str, problems: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if raw is None:
        return ()
    items = list(raw.items()) if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        problems.append(f"{at}: {raw!r} must be a list of paths or of {{name: path}}, or a mapping name -> path")
        return ()
    out: list[tuple[str, tuple[str, ...]]] = []
    for item in items:
        pairs = list(item.items()) if isinstance(item, dict) else [(item, item)] if isinstance(item, str) else None
        if pairs is None:
            problems.append(f"{at}: {item!r} must be a path or {{name: path}}")
            continue
        for name, path in pairs:
            if not isinstance(name, str) or not 0 < len(name) <= 64:
                problems.append(f"{at}: attribute name {name!r} must be 1–64 characters")
                continue
            parsed = _path(path, f"{at}, attribute {name!r}", problems)
            if parsed:
                out.append((name, parsed))
    return tuple(out)


def _zone(raw: object, at: str, problems: list[str]) -> tzinfo:
    if raw in ("UTC", "Z"):
        return UTC
    if isinstance(raw, str):
        m = re.fullmatch(r"([+-])(\d\d):(\d\d)", raw)
        if m is not None:
            delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
            return timezone(-delta if m.group(1) == "-" else delta)
        try:
            return ZoneInfo(raw)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    problems.append(f"{at}: {raw!r} must be UTC, an offset like +02:00 or a zone like Europe/Berlin")
    return UTC


def _lookup(obj: dict[str, object], path: tuple[str, ...], extra: AnyMapping[str, object] | None) -> object:
    if path[0].startswith("@"):
        return ABSENT if extra is None else extra.get(path[0], ABSENT)
    here: object = obj
    for part in path:
        if not isinstance(here, dict):
            return ABSENT
        here = here.get(part, ABSENT)
        if here is ABSENT:
            return ABSENT
    return here


def _text(raw: object) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw)


def _ts(spec: FieldSpec, raw: object) -> int:
    fmt = spec.ts_format
    where = f"{TS} (from {spec.source})"
    try:
        if fmt == "auto":
            return parse_ts(raw)
        if fmt == "rfc3339":
            if not isinstance(raw, str):
                raise ValueError("must be RFC 3339 text")
            dt = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1:] in "Zz" else raw)
            return _ms(dt, spec.tz)
        if fmt in _EPOCH_SCALE:
            number = float(raw) if isinstance(raw, str) else raw
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ValueError(f"must be a number ({fmt})")
            return parse_ts(int(number * _EPOCH_SCALE[fmt]))
        if not isinstance(raw, str):
            raise ValueError(f"must be text in the format {fmt!r}")
        return _ms(datetime.strptime(raw, fmt), spec.tz)
    except (ValueError, OverflowError) as exc:
        raise EventError(where, raw, f"is not a time in format {fmt!r}: {exc}") from None


def _ms(dt: datetime, zone: tzinfo) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone)
    return parse_ts((dt - _EPOCH) // timedelta(milliseconds=1))


def _show(obj: object) -> object:
    return obj if not isinstance(obj, str | bytes) or len(obj) <= 80 else obj[:77]


__all__ = ["FieldSpec", "Mapping", "MappingError", "load_mapping", "parse_mapping"]
