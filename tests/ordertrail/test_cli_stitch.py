"""The command line with a journeys file that declares other keys: ``check`` shows and validates
them; ``backtest`` joins a payment reported under its payment id to its order whether its link is
earlier or later in the file, and reports an event whose link never comes with its line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ordertrail.cli import main

JOURNEYS = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.requested:  {after: checkout.placed,    within: 30s}
      payment.authorized: {after: payment.requested, within: 30s}
    keys:
      payment_id: {steps: [payment.authorized], linked_by: [payment.requested]}
"""
T = 1_795_000_000_000


def line(order: str, hop: str, at: int, **attrs: str) -> str:
    return json.dumps({"order_id": order, "hop": hop, "ts": T + at, **({"attrs": attrs} if attrs else {})})


def test_backtest_stitches_rekeyed_steps_and_reports_unlinked_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "j.yaml").write_text(JOURNEYS)
    (tmp_path / "e.ndjson").write_text(
        "\n".join(
            [
                line("A", "checkout.placed", 0),
                line("pay-a", "payment.authorized", 2_000),  # its link comes later in the file
                line("A", "payment.requested", 1_000, payment_id="pay-a"),
                line("B", "checkout.placed", 0),
                line("B", "payment.requested", 1_000, payment_id="pay-b"),
                line("pay-b", "payment.authorized", 2_000),
                line("C", "checkout.placed", 0),
                line("C", "payment.requested", 1_000, payment_id="pay-c"),
                line("pay-x", "payment.authorized", 2_000),  # linked to nothing
            ]
        )
        + "\n"
    )
    assert (
        main(
            ["backtest", "--journeys", str(tmp_path / "j.yaml"), str(tmp_path / "e.ndjson"), "--until", str(T + 60_000)]
        )
        == 0
    )
    out, err = capsys.readouterr()
    findings = [json.loads(x) for x in out.splitlines()]
    assert [(f["order_id"], f["hop"], f["kind"]) for f in findings] == [("C", "payment.authorized", "missing")]
    assert "line 9: unlinked: no event in the file linked payment_id 'pay-x' to an order" in err


def test_check_shows_the_keys_and_refuses_bad_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "j.yaml"
    path.write_text(JOURNEYS)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  other keys:\n    payment_id: payment.authorized reported under it; linked by attrs.payment_id" in out
    path.write_text(JOURNEYS.replace("linked_by: [payment.requested]", "linked_by: [payment.nope]"))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: journey 'web_order', key 'payment_id', field 'linked_by': 'payment.nope' is not" in err
