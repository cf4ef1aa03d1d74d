"""Following files like tail -F: rotation by rename and by copytruncate, new files by glob, partial
and overlong lines, and positions that survive a restart (no line lost, none read twice)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors.taps.follow import MAX_LINE_BYTES, Follower, PositionFile

_open: list[Follower] = []


@pytest.fixture(autouse=True)
def _close_followers() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def follow(patterns: list[str], *args: Any, **kwargs: Any) -> Follower:
    f = Follower(patterns, *args, **kwargs)
    _open.append(f)
    return f


def write(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.writelines(line + "\n" for line in lines)


def texts(follower: Follower) -> list[str]:
    return [line.data.decode() for line in follower.poll()]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_reads_complete_lines_and_leaves_a_partial_one_for_later(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, "a", "b")
    with log.open("a") as f:
        f.write("c-partial")
    follower = follow([str(log)])
    assert texts(follower) == ["a", "b"]
    assert texts(follower) == []
    write(log, "-done")
    assert texts(follower) == ["c-partial-done"]


def test_rename_rotation_finishes_the_old_file_and_reads_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    clock = Clock()
    write(log, "1", "2")
    follower = follow([str(log)], close_after_s=5, clock=clock)
    assert texts(follower) == ["1", "2"]
    write(log, "3")  # written just before the rotation, not read yet
    log.rename(tmp_path / "app.log.1")
    write(log, "4")
    assert sorted(texts(follower)) == ["3", "4"]
    write(tmp_path / "app.log.1", "5")  # a writer that still had the old file open
    assert texts(follower) == ["5"]
    clock.t = 10
    assert texts(follower) == []
    assert len(follower.checkpoint()) == 1  # the drained, rotated-away file was closed
    assert follower.rotations == 1


def test_rename_rotation_with_a_glob_that_matches_the_rotated_file_reads_nothing_twice(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, "1")
    follower = follow([str(tmp_path / "app.log*")])
    assert texts(follower) == ["1"]
    log.rename(tmp_path / "app.log.1")
    write(log, "2")
    assert texts(follower) == ["2"]


def test_copytruncate_rotation_reads_the_truncated_file_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, "first line of the day", "second")
    follower = follow([str(log)])
    assert texts(follower) == ["first line of the day", "second"]
    shutil.copy(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    write(log, "x")  # shorter than what was read: the size shows the truncation
    assert texts(follower) == ["x"]
    shutil.copy(log, tmp_path / "app.log.2")
    os.truncate(log, 0)
    write(log, "a much longer first line after the second truncation", "y")  # longer: the head shows it
    assert texts(follower) == ["a much longer first line after the second truncation", "y"]
    assert follower.truncations == 2


def test_new_files_matching_the_glob_are_picked_up(tmp_path: Path) -> None:
    write(tmp_path / "a.log", "a1")
    follower = follow([str(tmp_path / "*.log"), str(tmp_path / "*.gz")])
    assert texts(follower) == ["a1"]
    write(tmp_path / "b.log", "b1")
    write(tmp_path / "b.txt", "ignored")
    write(tmp_path / "c.log.gz", "compressed rotations are left alone")
    assert texts(follower) == ["b1"]


def test_an_overlong_line_is_returned_cut_once_and_the_rest_skipped(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, "ok", "x" * 5000, "after")
    lines = follow([str(log)], max_line_bytes=1000).poll()
    assert [(line.data[:2], line.too_long) for line in lines] == [(b"ok", False), (b"xx", True), (b"af", False)]
    assert len(lines[1].data) == 1000


def test_restart_from_saved_positions_reads_each_line_once(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    positions = PositionFile(tmp_path / "state" / "positions.json")
    write(log, "1", "2")
    first = follow([str(log)], positions.load())
    assert texts(first) == ["1", "2"]
    positions.save(first.checkpoint())
    write(log, "3")
    assert texts(first) == ["3"]  # read but its position not saved: the crash comes now
    first.close()
    write(log, "4")
    second = follow([str(log)], positions.load())
    assert texts(second) == ["3", "4"]
    positions.save(second.checkpoint())
    second.close()
    third = follow([str(log)], positions.load())
    assert texts(third) == []


def test_a_file_renamed_while_the_tap_was_down_is_finished(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    positions = PositionFile(tmp_path / "positions.json")
    write(log, "1")
    first = follow([str(log)])
    assert texts(first) == ["1"]
    positions.save(first.checkpoint())
    first.close()
    write(log, "2")
    log.rename(tmp_path / "app.log.1")  # rotated while the tap was down
    write(log, "3")
    second = follow([str(log)], positions.load())
    assert sorted(texts(second)) == ["2", "3"]


def test_a_file_replaced_while_the_tap_was_down_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    positions = PositionFile(tmp_path / "positions.json")
    write(log, "old line 1", "old line 2")
    first = follow([str(log)])
    assert len(texts(first)) == 2
    positions.save(first.checkpoint())
    first.close()
    os.truncate(log, 0)  # same inode, new content (copytruncate while down)
    write(log, "new line 1", "new line 2", "new line 3")
    assert texts(follow([str(log)], positions.load())) == ["new line 1", "new line 2", "new line 3"]


def test_start_at_end_on_a_first_run_only(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, "history")
    follower = follow([str(log)], start_at_end=True)
    assert texts(follower) == []
    write(log, "live")
    assert texts(follower) == ["live"]


def test_an_unreadable_position_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "positions.json"
    path.write_text("{not json")
    assert PositionFile(path).load() == []


def test_a_line_over_the_default_limit_does_not_stall_the_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, "x" * (MAX_LINE_BYTES + 10), "next")
    lines = follow([str(log)]).poll()
    assert [(len(line.data), line.too_long) for line in lines] == [(MAX_LINE_BYTES, True), (4, False)]
