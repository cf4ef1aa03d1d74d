"""The journeys file (CONTRACT §2): what a valid file gives the tracer, and every way a file is
refused — each problem located by file, journey, step and field, all problems listed at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tracer.conftest import CHECKOUT, EMAIL, INVENTORY, PAYMENT, SHIPPED, WEB_ORDER, web_order
from tracer.errors import JourneysError
from tracer.journeys import load_journeys, parse_journeys

# -- what a valid file gives -------------------------------------------------------------------


def test_the_contract_example_is_parsed_into_steps_with_millisecond_deadlines() -> None:
    j = web_order().journeys["web_order"]
    assert j.start == CHECKOUT
    steps = {s.hop: s for s in j.steps}
    assert (steps[PAYMENT].after, steps[PAYMENT].within_ms) == (CHECKOUT, 30_000)
    assert (steps[INVENTORY].within_ms, steps[INVENTORY].stall_after_ms) == (120_000, 20_000)
    assert steps[EMAIL].confirmation is True
    assert steps[SHIPPED].within_ms == 86_400_000
    assert j.complete == (SHIPPED, EMAIL)


def test_hops_are_numbered_from_the_start_and_every_step_comes_after_its_after_hop() -> None:
    j = web_order().journeys["web_order"]
    assert j.hops[0] == CHECKOUT
    assert all(j.index[s.hop] == s.index and s.after_index < s.index for s in j.steps)
    assert j.ancestors[j.index[SHIPPED]] == {j.index[CHECKOUT], j.index[PAYMENT], j.index[INVENTORY]}
    assert {s.hop for s in j.children[j.index[PAYMENT]]} == {INVENTORY, EMAIL}


def test_complete_defaults_to_the_steps_nothing_waits_for() -> None:
    text = WEB_ORDER.replace("    complete: [fulfilment.shipped, email.confirmation_sent]\n", "")
    assert set(parse_journeys(text).journeys["web_order"].complete) == {SHIPPED, EMAIL}


def test_a_hop_in_one_journey_infers_it_and_a_shared_hop_does_not() -> None:
    js = parse_journeys(
        """
journeys:
  web:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 30s}
      web.shipped: {after: payment.authorized, within: 1d}
  app:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 1m}
      app.delivered: {after: payment.authorized, within: 1h}
"""
    )
    assert js.infer("web.shipped") is js.journeys["web"]
    assert js.infer("app.delivered") is js.journeys["app"]
    assert js.infer(PAYMENT) is None
    assert js.shared_hops[PAYMENT] == ("web", "app")
    assert js.infer("unknown.hop") is None


def test_stall_learning_has_defaults_and_can_be_tuned() -> None:
    assert web_order().learning.min_samples == 30
    js = parse_journeys(WEB_ORDER + "stall_learning: {percentile: 95, factor: 3, floor: 5s, min_samples: 10}\n")
    learning = js.learning
    assert (learning.percentile, learning.factor, learning.floor_ms, learning.min_samples) == (95.0, 3.0, 5000, 10)


def test_load_journeys_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(WEB_ORDER)
    js = load_journeys(path)
    assert list(js.journeys) == ["web_order"]
    assert js.source == str(path)


# -- refused files -----------------------------------------------------------------------------


def problems(text: str) -> list[str]:
    with pytest.raises(JourneysError) as err:
        parse_journeys(text, "shop.yaml")
    assert str(err.value) == "\n".join(err.value.problems)
    return err.value.problems


def one(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def journey(steps: str, extra: str = "", start: str = "a") -> str:
    return f"journeys:\n  web:\n    start: {start}\n    steps: {{{steps}}}\n{extra}"


AT = "shop.yaml: journey 'web'"


def test_a_file_that_is_not_yaml_is_refused_with_line_and_column() -> None:
    assert one("journeys: [") == (
        "shop.yaml: line 1, column 12: not valid YAML: expected the node content, but found '<stream end>'"
    )


@pytest.mark.parametrize("text", ["", "- a\n- b", "foo: 1", "journeys: {}", "journeys: [web]", "journeys:"])
def test_a_file_without_a_journeys_mapping_is_refused(text: str) -> None:
    assert one(text) == "shop.yaml: must be a mapping with a non-empty 'journeys:' mapping at the top"


def test_an_unknown_top_level_key_is_refused() -> None:
    assert one(WEB_ORDER + "journey_defaults: {}\n") == (
        "shop.yaml: top-level key 'journey_defaults' is not known; allowed: journeys, stall_learning, schedules"
    )


def test_a_journey_or_step_given_twice_is_refused_with_its_line() -> None:
    text = journey("b: {after: a, within: 1m}") + "  web:\n    start: c\n    steps: {d: {after: c, within: 1m}}\n"
    assert one(text) == "shop.yaml: line 5, column 3: not valid YAML: 'web' is given twice (first on line 2)"
    assert "'b' is given twice" in one(journey("b: {after: a, within: 1m}, b: {after: a, within: 2m}"))


def test_a_bad_journey_name_is_refused() -> None:
    text = "journeys:\n  'web order':\n    start: a\n    steps: {b: {after: a, within: 1s}}\n"
    assert one(text) == "shop.yaml: journey 'web order': the name must match [A-Za-z0-9_.-]{1,64}"


def test_a_journey_that_is_not_a_mapping_is_refused() -> None:
    assert one("journeys:\n  web: checkout.placed\n") == f"{AT}: must be a mapping with 'start', 'steps' and 'complete'"


def test_an_unknown_journey_field_is_refused() -> None:
    assert one(journey("b: {after: a, within: 1s}", "    deadline: 5m\n")) == (
        f"{AT}: field 'deadline' is not known; allowed: start, steps, complete, description, keys"
    )


def test_a_missing_start_is_refused() -> None:
    text = "journeys:\n  web:\n    steps: {b: {after: a, within: 1s}}\n"
    assert one(text) == f"{AT}, field 'start': is required (the hop that opens an order of this journey)"


@pytest.mark.parametrize("start", ["Checkout", "'check out'", "42", "[a]"])
def test_a_start_that_is_not_a_hop_name_is_refused(start: str) -> None:
    found = one(journey("b: {after: a, within: 1s}", start=start))
    assert found.startswith(f"{AT}, field 'start': ")
    assert "is not a hop name; it must match [a-z0-9_.-]{1,64}" in found


@pytest.mark.parametrize("steps", ["", "steps: []"])
def test_missing_or_empty_steps_are_refused(steps: str) -> None:
    text = f"journeys:\n  web:\n    start: a\n    {steps}\n"
    assert one(text) == f"{AT}, field 'steps': must be a non-empty mapping of hop -> {{after, within}}"


def test_more_than_31_steps_are_refused() -> None:
    steps = ", ".join(f"s{i}: {{after: a, within: 1m}}" for i in range(32))
    assert one(journey(steps)) == f"{AT}, field 'steps': has 32 steps; a journey may have at most 31"


def test_31_steps_are_accepted() -> None:
    steps = ", ".join(f"s{i}: {{after: a, within: 1m}}" for i in range(31))
    assert len(parse_journeys(journey(steps)).journeys["web"].steps) == 31


def test_a_step_that_is_not_a_hop_name_is_refused() -> None:
    assert one(journey("Bad: {after: a, within: 1s}")).startswith(f"{AT}, step 'Bad': not a hop name; it must match")


def test_a_step_that_is_not_a_mapping_is_refused() -> None:
    assert one(journey("b: 30s")) == f"{AT}, step 'b': must be a mapping like {{after: checkout.placed, within: 30s}}"


def test_an_unknown_step_field_is_refused() -> None:
    assert one(journey("b: {after: a, within: 1m, timeout: 2m}")) == (
        f"{AT}, step 'b': field 'timeout' is not known; allowed: after, within, stall_after, confirmation"
    )


def test_a_missing_after_is_refused() -> None:
    assert one(journey("b: {within: 1m}")) == (
        f"{AT}, step 'b', field 'after': is required (the hop this step waits for)"
    )


def test_an_after_that_is_not_a_hop_name_is_refused() -> None:
    assert one(journey("b: {after: A, within: 1m}")).startswith(
        f"{AT}, step 'b', field 'after': 'A' is not a hop name; it must match"
    )


def test_an_after_outside_the_journey_is_refused_listing_the_known_hops() -> None:
    assert one(journey("b: {after: c, within: 1m}")) == (
        f"{AT}, step 'b', field 'after': 'c' is neither the start nor a step of this journey; known hops: a, b"
    )


def test_a_missing_within_is_refused() -> None:
    assert one(journey("b: {after: a}")) == (
        f"{AT}, step 'b', field 'within': is required "
        "(a duration like 250ms, 30s, 5m, 2h, 1d (or combined, largest unit first: 1h30m))"
    )


@pytest.mark.parametrize(("value", "shown"), [("30", "30"), ("'30 s'", "'30 s'"), ("true", "True"), ("1.5m", "'1.5m'")])
def test_a_within_that_is_not_a_duration_is_refused(value: str, shown: str) -> None:
    assert one(journey(f"b: {{after: a, within: {value}}}")) == (
        f"{AT}, step 'b', field 'within': {shown} is not a duration like 250ms, 30s, 5m, 2h, 1d "
        "(or combined, largest unit first: 1h30m)"
    )


def test_a_zero_within_is_refused() -> None:
    assert one(journey("b: {after: a, within: 0s}")) == f"{AT}, step 'b', field 'within': must be longer than 0"


def test_a_within_longer_than_a_year_is_refused() -> None:
    assert one(journey("b: {after: a, within: 400d}")) == (
        f"{AT}, step 'b', field 'within': '400d' is longer than the longest allowed, 366d"
    )


def test_a_stall_after_that_is_not_a_duration_is_refused() -> None:
    assert one(journey("b: {after: a, within: 1m, stall_after: soon}")).startswith(
        f"{AT}, step 'b', field 'stall_after': 'soon' is not a duration"
    )


def test_a_zero_stall_after_is_refused() -> None:
    assert one(journey("b: {after: a, within: 1m, stall_after: 0ms}")) == (
        f"{AT}, step 'b', field 'stall_after': must be longer than 0"
    )


@pytest.mark.parametrize("stall", ["1m", "2m"])
def test_a_stall_after_not_shorter_than_within_is_refused(stall: str) -> None:
    assert one(journey(f"b: {{after: a, within: 1m, stall_after: {stall}}}")) == (
        f"{AT}, step 'b', field 'stall_after': must be shorter than 'within' (1m)"
    )


def test_a_confirmation_that_is_not_a_boolean_is_refused() -> None:
    assert one(journey("b: {after: a, within: 1m, confirmation: 'yes please'}")) == (
        f"{AT}, step 'b', field 'confirmation': 'yes please' must be true or false"
    )


def test_the_start_cannot_also_be_a_step() -> None:
    assert one(journey("a: {after: b, within: 1m}, b: {after: a, within: 1m}")) == (
        f"{AT}, step 'a': the start hop cannot also be a step"
    )


def test_steps_that_wait_for_each_other_in_a_cycle_are_refused() -> None:
    text = journey("b: {after: a, within: 1m}, c: {after: d, within: 1m}, d: {after: c, within: 1m}")
    assert one(text) == f"{AT}: steps 'c', 'd' wait for each other in a cycle and never for the start 'a'"


def test_a_step_that_waits_for_itself_is_refused() -> None:
    assert one(journey("b: {after: b, within: 1m}")) == (
        f"{AT}: steps 'b' wait for each other in a cycle and never for the start 'a'"
    )


@pytest.mark.parametrize(("value", "shown"), [("b", "'b'"), ("[]", "[]"), ("[1]", "[1]")])
def test_a_complete_that_is_not_a_list_of_hops_is_refused(value: str, shown: str) -> None:
    assert one(journey("b: {after: a, within: 1m}", f"    complete: {value}\n")) == (
        f"{AT}, field 'complete': {shown} must be a non-empty list of hops of this journey"
    )


def test_a_complete_hop_outside_the_journey_is_refused() -> None:
    assert one(journey("b: {after: a, within: 1m}", "    complete: [b, c]\n")) == (
        f"{AT}, field 'complete': 'c' is not the start or a step of this journey; known hops: a, b"
    )


def test_a_description_that_is_not_text_is_refused() -> None:
    assert one(journey("b: {after: a, within: 1m}", "    description: [1]\n")) == (
        f"{AT}, field 'description': [1] must be text"
    )


@pytest.mark.parametrize(
    ("learning", "message"),
    [
        ("5", "shop.yaml: stall_learning: must be a mapping with percentile, factor, floor, min_samples"),
        ("{pct: 5}", "shop.yaml: stall_learning: field 'pct' is not known; allowed: percentile, factor, floor"),
        ("{percentile: 100}", "shop.yaml: stall_learning, field 'percentile': 100 must be a number from 50 up to"),
        ("{percentile: 40}", "shop.yaml: stall_learning, field 'percentile': 40 must be a number from 50 up to"),
        ("{percentile: true}", "shop.yaml: stall_learning, field 'percentile': True must be a number"),
        ("{factor: 0.5}", "shop.yaml: stall_learning, field 'factor': 0.5 must be a number from 1 to 100"),
        ("{factor: '2'}", "shop.yaml: stall_learning, field 'factor': '2' must be a number from 1 to 100"),
        ("{floor: abc}", "shop.yaml: stall_learning, field 'floor': 'abc' is not a duration"),
        ("{min_samples: 0}", "shop.yaml: stall_learning, field 'min_samples': 0 must be a whole number from 1"),
        ("{min_samples: 2.5}", "shop.yaml: stall_learning, field 'min_samples': 2.5 must be a whole number"),
    ],
)
def test_bad_stall_learning_settings_are_refused(learning: str, message: str) -> None:
    assert one(WEB_ORDER + f"stall_learning: {learning}\n").startswith(message)


def test_every_problem_of_every_journey_is_listed_at_once() -> None:
    text = (
        "journeys:\n"
        "  web:\n    start: A\n    steps: {b: {after: a, within: 1m}}\n"
        "  app:\n    start: a\n    steps: {b: {after: a, within: x}, c: {after: a, within: 1m, stall_after: 2m}}\n"
        "extra: 1\n"
    )
    found = problems(text)
    assert len(found) == 4
    assert found[0] == "shop.yaml: top-level key 'extra' is not known; allowed: journeys, stall_learning, schedules"
    assert found[1].startswith("shop.yaml: journey 'web', field 'start': 'A'")
    assert found[2].startswith("shop.yaml: journey 'app', step 'b', field 'within': 'x'")
    assert found[3].startswith("shop.yaml: journey 'app', step 'c', field 'stall_after': must be shorter")


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(JourneysError, match=f"{path}: cannot be read: No such file or directory"):
        load_journeys(path)


def test_a_file_that_is_not_utf8_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("journeys: {café: 1}".encode("latin-1"))
    with pytest.raises(JourneysError, match=f"{path}: is not UTF-8 text"):
        load_journeys(path)
