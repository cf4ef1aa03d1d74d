"""The JSON-lines log tap: follow files, map each line to a hop event, deliver, remember where it
stands.

One cycle: ``Follower.poll()`` the new complete lines → ``Tap.handle`` (map, deliver, dead-letter;
durable when it returns True) → only then ``PositionFile.save`` the follower's checkpoint. A crash
anywhere re-reads the lines after the last saved position; their event ids (stable: derived from
order id, hop and time unless the mapping gives one) make the re-sent events harmless duplicates
that the tracer drops. No line is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from collectors.taps.core import SourceRecord, Tap
from collectors.taps.follow import Follower, Line, Position, PositionFile

log = logging.getLogger("ordertrail.tap.logs")


class LogTap:
    def __init__(
        self,
        tap: Tap,
        follower: Follower,
        positions: PositionFile,
        *,
        poll_interval_s: float = 0.25,
        max_lines: int = 10_000,
    ) -> None:
        self.tap = tap
        self.follower = follower
        self.positions = positions
        self._interval = poll_interval_s
        self._max_lines = max_lines
        self._saved: list[Position] | None = None

    def step(self) -> int:
        """One cycle; returns the number of lines read (0: nothing new), -1 if stopped mid-batch."""
        lines = self.follower.poll(self._max_lines)
        if lines and not self.tap.handle([_record(line) for line in lines]):
            return -1
        checkpoint = sorted(self.follower.checkpoint(), key=lambda p: (p.dev, p.ino))
        if checkpoint != self._saved:
            self.positions.save(checkpoint)
            self._saved = checkpoint
        return len(lines)

    def run(self) -> None:
        """Cycle until the tap's stop event is set."""
        stop = self.tap.stop
        while not stop.is_set():
            n = self.step()
            if n < 0:
                break
            if n == 0:
                stop.wait(self._interval)
        self.follower.close()


def _record(line: Line) -> SourceRecord:
    where = f"{line.path}:{line.offset}"
    if line.too_long:
        return SourceRecord(where, line.data, problem=f"the line is longer than {len(line.data)} bytes (cut here)")
    return SourceRecord(where, line.data)


def open_log_tap(
    tap: Tap,
    patterns: Sequence[str],
    position_file: PositionFile,
    *,
    start_at_end: bool = False,
    poll_interval_s: float = 0.25,
    close_after_s: float = 5.0,
) -> LogTap:
    """A log tap resuming from ``position_file`` (files it has no position for: from their start,
    or from their end with ``start_at_end`` on a first run)."""
    follower = Follower(patterns, position_file.load(), start_at_end=start_at_end, close_after_s=close_after_s)
    return LogTap(tap, follower, position_file, poll_interval_s=poll_interval_s)
