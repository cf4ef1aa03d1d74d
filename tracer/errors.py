"""The tracer's errors. One root, so callers can catch everything the tracer raises on purpose::

TracerError
├── EventError       one hop event broke a rule of CONTRACT §1 (field, value, rule)
├── BodyError        a request or file body is not JSON / NDJSON at all
├── JourneysError    the journeys file is unusable (file, journey, field, what is wrong)
└── StoreError       the store refused or could not be reached
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class TracerError(Exception):
    """Root of every error the tracer raises on purpose."""


class EventError(TracerError, ValueError):
    """A hop event broke a rule. ``str()`` names the field, the value and the rule."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        shown = "" if value is _ABSENT else f" {_truncate(value)}"
        super().__init__(f"{field}:{shown} {rule}")


class BodyError(TracerError, ValueError):
    """A body that is not JSON (or NDJSON) at all."""


class JourneysError(TracerError, ValueError):
    """The journeys file cannot be used. ``problems`` lists every problem found, each located."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StoreError(TracerError):
    """The store could not be reached or refused a write or a query."""


@contextmanager
def store_errors() -> Iterator[None]:
    """Around a call into the store: an unexpected driver error is a ``StoreError`` too (what the
    tracer raises on purpose passes unchanged), so the caller's retry covers it."""
    try:
        yield
    except TracerError:
        raise
    except Exception as exc:
        raise StoreError(f"the store failed: {exc}") from exc


def unknown_keys(at: str, spec: object, allowed: tuple[str, ...], noun: str = "field") -> list[str]:
    """One problem per key of the mapping ``spec`` that is not ``allowed``, each saying where it is,
    the key and what is allowed: the shared wording of every config parser (journeys, taps)."""
    keys = spec if isinstance(spec, dict) else {}
    return [f"{at}: {noun} {key!r} is not known; allowed: {', '.join(allowed)}" for key in keys if key not in allowed]


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()
ABSENT: object = _ABSENT


def _truncate(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
