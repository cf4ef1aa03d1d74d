"""The tracer: the event model, journeys, the engine that turns hops into findings, its clock,
and the bus and store adapters. The names below are the public API; modules are internals."""

# ruff: noqa: E402 - the guard runs before the imports below: it decides where they come from.
# First, before any compiled module: the compiled hot path or its source (tracer/native.py).
from tracer.native import guard as _guard

_guard()

from tracer.engine import OrderSnapshot, Tracer, TracerStats
from tracer.errors import BodyError, EventError, JourneysError, StoreError, TracerError
from tracer.events import Batch, decode_batch, decode_line, validate
from tracer.journeys import Journey, Journeys, KeySpec, Step, load_journeys, parse_journeys
from tracer.model import Finding, HopEvent, event_to_wire, format_ts
from tracer.stitch import KeyLink, Stitcher
from tracer.times import parse_duration, parse_ts

__all__ = [
    "Batch",
    "BodyError",
    "EventError",
    "Finding",
    "HopEvent",
    "Journey",
    "Journeys",
    "JourneysError",
    "KeyLink",
    "KeySpec",
    "OrderSnapshot",
    "Step",
    "Stitcher",
    "StoreError",
    "Tracer",
    "TracerError",
    "TracerStats",
    "decode_batch",
    "decode_line",
    "event_to_wire",
    "format_ts",
    "load_journeys",
    "parse_duration",
    "parse_journeys",
    "parse_ts",
    "validate",
]
