"""``ordertrail tap``: unusable arguments and mapping files are refused before anything is read,
with every problem named (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ordertrail.cli import main


def test_an_invalid_mapping_file_is_refused_with_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text("order_id: id\nts: {field: t, format: julian}\n")
    assert (
        main(["tap", "logs", "--mapping", str(mapping), "--state", str(tmp_path / "s"), str(tmp_path / "*.log")]) == 2
    )
    err = capsys.readouterr().err
    assert f"error: {mapping}: field 'hop' is required" in err
    assert f"error: {mapping}: field 'ts', key 'format': 'julian' must be one of" in err
    assert not (tmp_path / "s").exists()


def test_a_server_that_is_not_a_url_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text("order_id: id\nhop: h\nts: t\n")
    argv = [
        "tap",
        "kafka",
        "--mapping",
        str(mapping),
        "--server",
        "localhost:4320",
        "--brokers",
        "b:9092",
        "--topic",
        "t",
    ]
    assert main(argv) == 2
    assert "--server: 'localhost:4320' must be an http(s):// URL" in capsys.readouterr().err


def test_a_kind_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tap"]) == 2
    assert "logs" in capsys.readouterr().err
