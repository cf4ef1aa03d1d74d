"""The span attribute names of ``/v1/traces`` in ``ordertrail run``'s configuration: flag >
``ORDERTRAIL_*_ATTRIBUTE`` > default, and unusable names refused naming the flag."""

from __future__ import annotations

import argparse

import pytest

from collectors.spanmap import SpanMapping
from ordertrail.config import ConfigError, RunConfig, add_run_arguments


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return parser.parse_args(["--journeys", "j.yaml", *argv])


def test_defaults_are_the_opentelemetry_demo_convention() -> None:
    assert RunConfig.from_args(parse(), {}).spans == SpanMapping()
    assert SpanMapping().order == "app.order.id" and SpanMapping().hop == "app.order.hop"


def test_flags_win_over_the_environment() -> None:
    env = {"ORDERTRAIL_ORDER_ATTRIBUTE": "shop.order_id", "ORDERTRAIL_CUSTOMER_ATTRIBUTE": "enduser.id"}
    config = RunConfig.from_args(parse("--order-attribute", "order.number", "--hop-attribute", "order.step"), env)
    assert config.spans == SpanMapping(order="order.number", hop="order.step", customer="enduser.id")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--order-attribute", " padded"), "--order-attribute: ' padded' must be 1–255 printable characters"),
        (("--hop-attribute", "app.order.id"), "--hop-attribute: 'app.order.id' is already the order attribute"),
    ],
)
def test_unusable_names_are_refused_naming_the_flag(argv: tuple[str, ...], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        RunConfig.from_args(parse(*argv), {})
