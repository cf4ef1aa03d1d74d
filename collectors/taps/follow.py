"""Following log files like ``tail -F``, with a durable position that survives restarts.

``Follower.poll()`` returns the complete lines written since the last call, across every file the
glob patterns match. A file is known by its (device, inode), not its name, so:

* rotation by rename (``app.log`` -> ``app.log.1``, a new ``app.log``): the open handle keeps
  reading the old file to its end, the new file is read from its start; the old handle is closed
  once it has been drained and idle for ``close_after_s``;
* rotation by copytruncate (``app.log`` copied, then truncated in place): a file shorter than the
  position read is read again from its start. Lines written between the copy and the truncation
  are lost to every reader; that is copytruncate's nature (prefer rename rotation);
* new files that match a pattern are picked up at the next scan, from their start; compressed
  rotations (``.gz`` and the like) are left alone.

A partial last line (no newline yet) is left for the next poll. A line longer than
``max_line_bytes`` is returned once, cut, with ``too_long`` set, and the rest of it skipped.

``checkpoint()`` is the position after the lines returned so far; ``PositionFile.save`` writes it
atomically and fsyncs it. The caller saves only after the lines' events were accepted, so a crash
re-reads (never skips) lines; event-id dedupe downstream makes the re-read harmless. Each saved
position carries a fingerprint of the file's first bytes, so a reused inode or a file replaced
while the tap was down is read from its start, not from a stranger's offset. A file renamed while
the tap was down is found again by its inode in its old directory and finished.

This module reads files and nothing else; it knows nothing of hop events.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import msgspec

log = logging.getLogger("ordertrail.tap.follow")

HEAD_BYTES: Final = 256  # how much of a file's start fingerprints it
MAX_LINE_BYTES: Final = 1024 * 1024
_READ_CHUNK: Final = 1024 * 1024
COMPRESSED: Final = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4")  # rotated and compressed: never JSON lines

FileKey = tuple[int, int]  # (st_dev, st_ino)


@dataclass(frozen=True, slots=True)
class Line:
    path: str
    offset: int  # where the line starts in its file
    data: bytes  # without the newline
    too_long: bool = False


class Position(msgspec.Struct, frozen=True):
    """Where reading of one file stands: read up to ``offset``; ``head`` fingerprints its start."""

    dev: int
    ino: int
    path: str
    offset: int
    head_len: int
    head: str


class _Saved(msgspec.Struct):
    version: int = 1
    files: list[Position] = []


class PositionFile:
    """The durable positions of a tap: JSON, replaced atomically, fsync'd with its directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> list[Position]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            return msgspec.json.decode(data, type=_Saved).files
        except msgspec.MsgspecError as exc:
            # A torn write cannot happen (atomic rename); a hand-edited file can. Start over loudly
            # rather than refuse to run: every line is then read again and deduped downstream.
            log.error("position file %s is unreadable (%s); reading every file from its start", self.path, exc)
            return []

    def save(self, positions: Iterable[Position]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = msgspec.json.encode(_Saved(files=sorted(positions, key=lambda p: (p.path, p.ino))))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@dataclass(slots=True)
class _File:
    key: FileKey
    path: str
    fh: BinaryIO
    offset: int
    head_len: int
    head: str
    rotated_at: float | None = None  # when its name stopped leading to it
    discarding: bool = False  # skipping the rest of an overlong line

    def position(self) -> Position:
        return Position(self.key[0], self.key[1], self.path, self.offset, self.head_len, self.head)


class Follower:
    def __init__(
        self,
        patterns: Sequence[str],
        saved: Iterable[Position] = (),
        *,
        start_at_end: bool = False,
        max_line_bytes: int = MAX_LINE_BYTES,
        close_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.patterns = list(patterns)
        self._saved: dict[FileKey, Position] = {(p.dev, p.ino): p for p in saved}
        self._start_at_end = start_at_end and not self._saved
        self._max_line = max_line_bytes
        self._close_after_s = close_after_s
        self._clock = clock
        self._files: dict[FileKey, _File] = {}
        self.truncations = 0
        self.rotations = 0
        self._first_scan = True

    # -- public ---------------------------------------------------------------------------------

    def poll(self, max_lines: int = 10_000) -> list[Line]:
        """Complete lines written since the last call (up to about ``max_lines``)."""
        self._scan()
        out: list[Line] = []
        for f in list(self._files.values()):
            if len(out) >= max_lines:
                break
            self._read(f, out, max_lines)
        self._close_drained()
        return out

    def checkpoint(self) -> list[Position]:
        """The position after every line returned so far, for ``PositionFile.save``."""
        return [f.position() for f in self._files.values()]

    def close(self) -> None:
        for f in self._files.values():
            f.fh.close()
        self._files.clear()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- discovering files ----------------------------------------------------------------------

    def _scan(self) -> None:
        now = self._clock()
        by_path = {f.path: f for f in self._files.values() if f.rotated_at is None}
        seen: set[FileKey] = set()
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern)):
                if path.endswith(COMPRESSED):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # gone between glob and stat: the next scan sees what replaced it
                if not _is_regular(st.st_mode):
                    continue
                key = (st.st_dev, st.st_ino)
                seen.add(key)
                previous = by_path.get(path)
                if previous is not None and previous.key != key:
                    previous.rotated_at = now  # renamed away: drain it, then close it
                    self.rotations += 1
                known = self._files.get(key)
                if known is not None:
                    known.path = path
                    known.rotated_at = None
                    continue
                self._open(path, key, at_end=self._start_at_end and self._first_scan)
        if self._first_scan:
            self._finish_renamed_while_down(seen)
        self._first_scan = False
        for f in self._files.values():
            if f.key not in seen and f.rotated_at is None:
                f.rotated_at = now  # renamed out of the patterns, or deleted

    def _finish_renamed_while_down(self, seen: set[FileKey]) -> None:
        """Saved files no pattern matches any more: look for their inode in their old directory."""
        for key, pos in list(self._saved.items()):
            if key in seen or key in self._files:
                continue
            directory = os.path.dirname(pos.path) or "."
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == key and _is_regular(st.st_mode):
                    log.info("%s was renamed to %s while the tap was down; finishing it", pos.path, entry.path)
                    f = self._open(entry.path, key, at_end=False)
                    if f is not None:
                        f.rotated_at = self._clock()
                    break

    def _open(self, path: str, key: FileKey, *, at_end: bool) -> _File | None:
        try:
            fh = open(path, "rb")  # noqa: SIM115 -- held open across polls, closed by _close_drained
        except OSError as exc:
            log.warning("cannot open %s: %s", path, exc)
            return None
        st = os.fstat(fh.fileno())
        if (st.st_dev, st.st_ino) != key:  # replaced between stat and open: the next scan sees it
            fh.close()
            return None
        head = fh.read(HEAD_BYTES)
        offset = 0
        saved = self._saved.pop(key, None)
        if saved is not None:
            if saved.head_len <= len(head) and _digest(head[: saved.head_len]) == saved.head:
                offset = min(saved.offset, st.st_size)
            else:
                log.info("%s is not the file its saved position was for (inode reused); reading it all", path)
        elif at_end:
            offset = st.st_size
        f = _File(key, path, fh, offset, len(head), _digest(head))
        self._files[key] = f
        return f

    # -- reading --------------------------------------------------------------------------------

    def _read(self, f: _File, out: list[Line], max_lines: int) -> None:
        try:
            size = os.fstat(f.fh.fileno()).st_size
        except OSError:
            return
        if size < f.offset or (f.offset and size > f.offset and not self._same_head(f)):
            # Truncated in place (copytruncate), perhaps already written past our position again:
            # the start of the file no longer is what we read.
            log.warning("%s was truncated (copytruncate?); reading it from its start", f.path)
            self.truncations += 1
            f.offset = 0
            f.discarding = False
        if (f.head_len < HEAD_BYTES and size > f.head_len) or size < f.head_len:
            head = os.pread(f.fh.fileno(), HEAD_BYTES, 0)
            f.head_len, f.head = len(head), _digest(head)
        while size > f.offset and len(out) < max_lines:
            f.fh.seek(f.offset)
            data = f.fh.read(max(_READ_CHUNK, self._max_line + 1))  # room for one whole line at least
            if not data:
                return
            if f.discarding:
                nl = data.find(b"\n")
                if nl < 0:
                    f.offset += len(data)
                    continue
                f.offset += nl + 1
                f.discarding = False
                continue
            last = data.rfind(b"\n")
            if last < 0:
                if len(data) > self._max_line:
                    out.append(Line(f.path, f.offset, data[: self._max_line], too_long=True))
                    f.offset += len(data)
                    f.discarding = True
                    continue
                return  # a partial line: wait for the rest
            start = 0
            base = f.offset
            while start <= last:
                nl = data.index(b"\n", start)
                if nl - start > self._max_line:
                    out.append(Line(f.path, base + start, data[start : start + self._max_line], too_long=True))
                else:
                    out.append(Line(f.path, base + start, data[start:nl]))
                start = nl + 1
                if len(out) >= max_lines:
                    break
            f.offset = base + start

    @staticmethod
    def _same_head(f: _File) -> bool:
        try:
            return _digest(os.pread(f.fh.fileno(), f.head_len, 0)) == f.head
        except OSError:
            return True

    def _close_drained(self) -> None:
        now = self._clock()
        for key, f in list(self._files.items()):
            if f.rotated_at is None or now - f.rotated_at < self._close_after_s:
                continue
            try:
                size = os.fstat(f.fh.fileno()).st_size
            except OSError:
                size = f.offset
            if size <= f.offset:
                f.fh.close()
                del self._files[key]


def _digest(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=8).hexdigest()


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


__all__ = ["Follower", "Line", "Position", "PositionFile"]
