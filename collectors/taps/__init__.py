"""Taps: hop events from systems that cannot be changed — JSON-lines logs and existing Kafka
topics — through a declarative mapping (docs/taps.md). The names below are the public API."""

from collectors.taps.core import (
    DeadLetter,
    DeadLetterFile,
    DeadLetterSink,
    Delivery,
    HttpDelivery,
    RetryLater,
    SourceRecord,
    Tap,
    TapStats,
)
from collectors.taps.follow import Follower, Line, Position, PositionFile
from collectors.taps.logs import LogTap, open_log_tap
from collectors.taps.mapping import Mapping, MappingError, load_mapping, parse_mapping

__all__ = [
    "DeadLetter",
    "DeadLetterFile",
    "DeadLetterSink",
    "Delivery",
    "Follower",
    "HttpDelivery",
    "Line",
    "LogTap",
    "Mapping",
    "MappingError",
    "Position",
    "PositionFile",
    "RetryLater",
    "SourceRecord",
    "Tap",
    "TapStats",
    "load_mapping",
    "open_log_tap",
    "parse_mapping",
]
