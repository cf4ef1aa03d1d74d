"""``ordertrail check JOURNEYS_FILE`` and the command dispatch: exit statuses, what goes where."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ordertrail.cli import Command, build_parser, main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "journeys.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "journeys.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def web_order(tmp_path: Path, *steps: str, complete: str = "") -> Path:
    """A journeys file with one journey, web_order, starting at checkout.placed, with these steps."""
    lines = ["journeys:", "  web_order:", "    start: checkout.placed", "    steps:", *(f"      {s}" for s in steps)]
    if complete:
        lines.append(f"    complete: {complete}")
    return write(tmp_path, "\n".join(lines) + "\n")


def test_check_of_the_example_file_exits_0_and_describes_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"{EXAMPLE}: OK, 1 journey" in out
    assert "journey web_order: An order placed on the web shop" in out
    assert "start: checkout.placed" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("    ")}
    assert rows["payment.authorized"] == ["checkout.placed", "30s", "learned"]
    assert rows["inventory.reserved"] == ["payment.authorized", "2m", "20s"]
    assert rows["email.confirmation_sent"] == ["payment.authorized", "5m", "learned", "confirmation"]
    assert rows["fulfilment.shipped"] == ["inventory.reserved", "1d", "learned"]
    assert "complete when seen: fulfilment.shipped, email.confirmation_sent" in out
    assert "stall learning" in out
    assert "notes: none" in out


def test_check_of_an_invalid_file_exits_2_with_every_problem_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = web_order(
        tmp_path,
        "payment.authorized: {after: checkout.placed, within: soon}",
        "inventory.reserved: {after: payment.authorized, within: 2m, stall: 20s}",
    )
    assert main(["check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}: journey 'web_order', step 'payment.authorized', field 'within': 'soon'" in err
    assert "step 'inventory.reserved': field 'stall' is not known" in err
    assert err.rstrip().endswith(f"{path}: 2 problems; the file is not usable")


def test_check_of_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "nope.yaml: cannot be read" in err


def test_check_of_a_file_that_is_not_yaml_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "journeys: [unclosed\n")
    assert main(["check", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_check_notes_hops_shared_by_several_journeys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 30s}
  app_order:
    start: app.checkout
    steps:
      payment.authorized: {after: app.checkout, within: 1m}
""",
    )
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK, 2 journeys" in out
    assert "hop 'payment.authorized' is in journeys web_order, app_order: it cannot be used to infer" in out


def test_check_notes_a_step_that_does_not_count_towards_completion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = web_order(
        tmp_path,
        "payment.authorized: {after: checkout.placed, within: 30s}",
        "email.confirmation_sent: {after: payment.authorized, within: 5m, confirmation: true}",
        "fulfilment.shipped: {after: payment.authorized, within: 1d}",
        complete="[fulfilment.shipped]",
    )
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "journey 'web_order', step 'email.confirmation_sent': nothing waits for it" in out
    assert "step 'fulfilment.shipped': nothing waits" not in out


def test_no_command_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "check" in err and "backtest" in err


def test_an_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "usage: ordertrail" in capsys.readouterr().out


def test_a_command_row_adds_a_subcommand_whose_main_is_dispatched() -> None:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--times", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        return int(args.times)

    parser = build_parser([Command("echo", "say it", add, run)])
    args = parser.parse_args(["echo", "--times", "7"])
    assert args._main(args) == 7
