"""Fixtures shared across the test packages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.ordertrail.test_run_e2e import Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A real ``ordertrail run`` subprocess on a free port with its own data directory (the
    ``Server`` helper of tests/ordertrail/test_run_e2e.py), stopped after the test."""
    from tests.ordertrail.test_run_e2e import Server

    s = Server(tmp_path)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same, shared by the tests of one module (each test keeps to its own order ids)."""
    from tests.ordertrail.test_run_e2e import Server

    s = Server(tmp_path_factory.mktemp("server"))
    s.start()
    yield s
    s.stop()
