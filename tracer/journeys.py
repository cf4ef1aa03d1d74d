"""The journeys file (CONTRACT §2): what hops an order goes through and how soon each is due.

``load_journeys(path)`` / ``parse_journeys(text, source)`` return an immutable ``Journeys`` or
raise ``JourneysError`` listing every problem, each located by file, journey, step and field.
Hops are numbered per journey (the start is 0) so the tracer can keep per-order state compact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import yaml

from tracer.errors import JourneysError, unknown_keys
from tracer.events import HOP_RE, HOP_RULE
from tracer.schedules import Schedule, parse_schedules
from tracer.times import DURATION_HELP, parse_duration

JOURNEY_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_JOURNEY_KEYS: Final = ("start", "steps", "complete", "description", "keys")
_KEY_KEYS: Final = ("steps", "linked_by", "attr", "within")
KEY_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
DEFAULT_LINK_WITHIN_MS: Final = 10 * 60_000
_STEP_KEYS: Final = ("after", "within", "stall_after", "confirmation")
_TOP_KEYS: Final = ("journeys", "stall_learning", "schedules")
_LEARNING_KEYS: Final = ("percentile", "factor", "floor", "min_samples")
MAX_WITHIN_MS: Final = 366 * 86_400_000  # deadlines stay far inside int64 milliseconds
MAX_STEPS: Final = 31  # per-order state keeps two finding bits per hop in one 64-bit word


@dataclass(frozen=True, slots=True)
class Step:
    """One awaited hop: due ``within_ms`` after the event time of its ``after`` hop."""

    hop: str
    index: int
    after: str
    after_index: int
    within_ms: int
    stall_after_ms: int | None = None
    confirmation: bool = False


@dataclass(frozen=True, slots=True)
class KeySpec:
    """Another key of the same order (docs/stitching.md): events of ``steps`` are reported under
    it (their ``order_id`` is, say, the payment id); an event of a ``linked_by`` hop (any hop of
    the journey when empty) carrying both the order id and ``attrs[attr]`` links the two. An
    event that waits for its link longer than ``within_ms`` is reported as unlinked."""

    name: str
    attr: str
    steps: tuple[str, ...]
    linked_by: tuple[str, ...]
    within_ms: int
    journey: str


@dataclass(frozen=True, slots=True)
class StallLearning:
    """How the soft limit of a step without ``stall_after`` is learned from its edge."""

    percentile: float = 99.0
    factor: float = 2.0
    floor_ms: int = 1000
    min_samples: int = 30


@dataclass(frozen=True, slots=True)
class Journey:
    name: str
    start: str
    steps: tuple[Step, ...]  # ordered so every step comes after the step it waits for
    complete: tuple[str, ...]
    description: str = ""
    hops: tuple[str, ...] = ()  # index -> hop; 0 is the start
    index: Mapping[str, int] = field(default_factory=dict)
    step_at: tuple[Step | None, ...] = ()  # hop index -> its step (None for the start)
    children: tuple[tuple[Step, ...], ...] = ()  # hop index -> steps waiting for it
    ancestors: tuple[frozenset[int], ...] = ()  # hop index -> indexes of every hop before it
    complete_mask: int = 0
    keys: tuple[KeySpec, ...] = ()

    @staticmethod
    def build(
        name: str,
        start: str,
        steps: list[Step],
        complete: list[str],
        description: str,
        keys: tuple[KeySpec, ...] = (),
    ) -> Journey:
        hops = (start, *(s.hop for s in steps))
        index = {hop: i for i, hop in enumerate(hops)}
        step_at: list[Step | None] = [None, *steps]
        children: list[list[Step]] = [[] for _ in hops]
        for s in steps:
            children[s.after_index].append(s)
        ancestors: list[frozenset[int]] = [frozenset()]
        for s in steps:  # steps are topologically ordered
            ancestors.append(ancestors[s.after_index] | {s.after_index})
        mask = 0
        for hop in complete:
            mask |= 1 << index[hop]
        return Journey(
            name,
            start,
            tuple(steps),
            tuple(complete),
            description,
            hops,
            index,
            tuple(step_at),
            tuple(tuple(c) for c in children),
            tuple(ancestors),
            mask,
            keys,
        )


@dataclass(frozen=True, slots=True)
class Journeys:
    journeys: Mapping[str, Journey]
    by_hop: Mapping[str, Journey]  # hops that belong to exactly one journey
    shared_hops: Mapping[str, tuple[str, ...]]  # hops in several journeys -> their journeys
    learning: StallLearning
    source: str = "<journeys>"
    schedules: tuple[Schedule, ...] = ()  # scheduled expectations (tracer.schedules)

    def infer(self, hop: str) -> Journey | None:
        """The one journey whose start or steps contain ``hop``, else None."""
        return self.by_hop.get(hop)


def load_journeys(path: str | Path) -> Journeys:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise JourneysError([f"{p}: cannot be read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise JourneysError([f"{p}: is not UTF-8 text: {exc.reason} at byte {exc.start}"]) from None
    return parse_journeys(text, str(p))


def parse_journeys(text: str, source: str = "<journeys>") -> Journeys:
    try:
        doc = yaml.load(text, Loader=_Loader)  # a SafeLoader that refuses repeated keys
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise JourneysError([f"{source}:{where} not valid YAML: {problem}"]) from None
    problems: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("journeys"), dict) or not doc["journeys"]:
        raise JourneysError([f"{source}: must be a mapping with a non-empty 'journeys:' mapping at the top"])
    problems += unknown_keys(source, doc, _TOP_KEYS, "top-level key")
    learning = _learning(doc.get("stall_learning"), source, problems)
    journeys: dict[str, Journey] = {}
    for name, spec in doc["journeys"].items():
        journey = _journey(str(name), spec, source, problems)
        if journey is not None:
            journeys[journey.name] = journey
    schedules = parse_schedules(doc.get("schedules"), source, problems)
    _check_keys_across(journeys, source, problems)
    if problems:
        raise JourneysError(problems)
    owners: dict[str, list[str]] = {}
    for journey in journeys.values():
        for hop in journey.hops:
            owners.setdefault(hop, []).append(journey.name)
    by_hop = {hop: journeys[names[0]] for hop, names in owners.items() if len(names) == 1}
    shared = {hop: tuple(names) for hop, names in owners.items() if len(names) > 1}
    return Journeys(journeys, by_hop, shared, learning, source, schedules)


def _check_keys_across(journeys: Mapping[str, Journey], source: str, problems: list[str]) -> None:
    """A hop keyed by another key is resolved by its hop alone, so across journeys it must be
    keyed the same way; and one key name means one kind of key everywhere."""
    keyed: dict[str, tuple[str, str]] = {}
    for j in journeys.values():
        for spec in j.keys:
            for hop in spec.steps:
                other = keyed.setdefault(hop, (spec.name, j.name))
                if other[0] != spec.name:
                    problems.append(
                        f"{source}: journey {j.name!r}, key {spec.name!r}, field 'steps': {hop!r} is keyed by "
                        f"{other[0]!r} in journey {other[1]!r}; a hop is keyed by one key in every journey"
                    )
    for j in journeys.values():
        for hop in j.hops:
            if hop in keyed and keyed[hop][1] != j.name and hop not in {h for k in j.keys for h in k.steps}:
                problems.append(
                    f"{source}: journey {j.name!r}: hop {hop!r} is keyed by {keyed[hop][0]!r} in journey "
                    f"{keyed[hop][1]!r} but not here; key it here too, or rename one of them"
                )


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error: YAML keeps the last
    silently, and a second journey or step of the same name hides the first."""


def _unique_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: dict[object, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: the constructor below reports it
        seen[key] = key_node.start_mark.line
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is given twice (first on line {first + 1})", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_keys)


def _journey(name: str, spec: object, source: str, problems: list[str]) -> Journey | None:
    at = f"{source}: journey {name!r}"
    if JOURNEY_NAME_RE.fullmatch(name) is None:
        problems.append(f"{at}: the name must match [A-Za-z0-9_.-]{{1,64}}")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{at}: must be a mapping with 'start', 'steps' and 'complete'")
        return None
    before = len(problems)
    problems += unknown_keys(at, spec, _JOURNEY_KEYS)
    start = spec.get("start")
    if start is None:
        problems.append(f"{at}, field 'start': is required (the hop that opens an order of this journey)")
    elif not isinstance(start, str) or HOP_RE.fullmatch(start) is None:
        problems.append(f"{at}, field 'start': {start!r} is not a hop name; it {HOP_RULE}")
        start = None
    raw_steps = spec.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        problems.append(f"{at}, field 'steps': must be a non-empty mapping of hop -> {{after, within}}")
        return None
    if len(raw_steps) > MAX_STEPS:
        problems.append(f"{at}, field 'steps': has {len(raw_steps)} steps; a journey may have at most {MAX_STEPS}")
        return None
    parsed: dict[str, dict[str, object]] = {}
    for hop, step_spec in raw_steps.items():
        step = _step(str(hop), step_spec, f"{at}, step {str(hop)!r}", problems)
        if step is not None:
            parsed[str(hop)] = step
    if start is None or len(problems) > before:
        return None
    if start in parsed:
        problems.append(f"{at}, step {start!r}: the start hop cannot also be a step")
        return None
    ordered = _order_steps(start, parsed, at, problems)
    if ordered is None:
        return None
    description = spec.get("description", "")
    if not isinstance(description, str):
        problems.append(f"{at}, field 'description': {description!r} must be text")
        return None
    complete = spec.get("complete")
    hops = {start, *parsed}
    if complete is None:
        afters = {str(s["after"]) for s in parsed.values()}
        complete = [hop for hop in parsed if hop not in afters]
    elif not isinstance(complete, list) or not complete or not all(isinstance(h, str) for h in complete):
        problems.append(f"{at}, field 'complete': {complete!r} must be a non-empty list of hops of this journey")
        return None
    unknown = [h for h in complete if h not in hops]
    if unknown:
        problems.append(
            f"{at}, field 'complete': {', '.join(map(repr, unknown))} is not the start or a step of this "
            f"journey; known hops: {', '.join(sorted(hops))}"
        )
        return None
    index = {start: 0, **{hop: i + 1 for i, hop in enumerate(ordered)}}
    steps = [
        Step(
            hop,
            index[hop],
            str(parsed[hop]["after"]),
            index[str(parsed[hop]["after"])],
            int(str(parsed[hop]["within"])),
            _opt_int(parsed[hop].get("stall_after")),
            bool(parsed[hop].get("confirmation", False)),
        )
        for hop in ordered
    ]
    keys = _keys(name, spec.get("keys"), hops, start, at, problems)
    if keys is None:
        return None
    return Journey.build(name, start, steps, list(dict.fromkeys(complete)), str(description or ""), keys)


def _keys(
    journey: str, spec: object, hops: set[str], start: str, at: str, problems: list[str]
) -> tuple[KeySpec, ...] | None:
    """The journey's ``keys:`` section: other keys of its orders, and which events carry them."""
    if spec is None:
        return ()
    if not isinstance(spec, dict) or not spec:
        problems.append(f"{at}, field 'keys': must be a mapping of key name -> {{steps, linked_by, attr, within}}")
        return None
    before = len(problems)
    out: list[KeySpec] = []
    keyed: dict[str, str] = {}
    for name, raw in spec.items():
        where = f"{at}, key {str(name)!r}"
        if not isinstance(name, str) or KEY_NAME_RE.fullmatch(name) is None:
            problems.append(f"{where}: the name must match [a-z][a-z0-9_]{{0,63}}, e.g. payment_id")
            continue
        if not isinstance(raw, dict):
            problems.append(
                f"{where}: must be a mapping like {{steps: [payment.authorized], linked_by: [payment.requested]}}"
            )
            continue
        problems += unknown_keys(where, raw, _KEY_KEYS)
        steps = _hop_list(raw.get("steps"), f"{where}, field 'steps'", hops, problems, required=True)
        linked_by = _hop_list(raw.get("linked_by"), f"{where}, field 'linked_by'", hops, problems, required=False)
        if start in steps:
            problems.append(f"{where}, field 'steps': {start!r} is the start; an order opens under its own id")
        for hop in steps:
            if hop in keyed:
                problems.append(f"{where}, field 'steps': {hop!r} is already keyed by {keyed[hop]!r}")
            keyed[hop] = name
        both = sorted(set(steps) & set(linked_by))
        if both:
            problems.append(
                f"{where}, field 'linked_by': {', '.join(map(repr, both))} is also in 'steps'; a linking event "
                "carries the order id, a keyed one does not"
            )
        attr = raw.get("attr", name)
        if not isinstance(attr, str) or not 0 < len(attr) <= 64:
            problems.append(f"{where}, field 'attr': {attr!r} must be an attribute name of 1–64 characters")
        within = DEFAULT_LINK_WITHIN_MS
        if "within" in raw:
            try:
                within = parse_duration(raw["within"])
            except ValueError:
                problems.append(f"{where}, field 'within': {raw['within']!r} is not {DURATION_HELP}")
            else:
                if not 0 < within <= MAX_WITHIN_MS:
                    problems.append(
                        f"{where}, field 'within': {raw['within']!r} must be longer than 0 and at most 366d"
                    )
        out.append(KeySpec(name, str(attr), steps, linked_by, within, journey))
    return tuple(out) if len(problems) == before else None


def _hop_list(raw: object, at: str, hops: set[str], problems: list[str], *, required: bool) -> tuple[str, ...]:
    if raw is None and not required:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(h, str) for h in raw):
        problems.append(f"{at}: {raw!r} must be a non-empty list of hops of this journey")
        return ()
    unknown = [h for h in raw if h not in hops]
    if unknown:
        problems.append(
            f"{at}: {', '.join(map(repr, unknown))} is not the start or a step of this journey; "
            f"known hops: {', '.join(sorted(hops))}"
        )
        return ()
    return tuple(dict.fromkeys(raw))


def _opt_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _step(hop: str, spec: object, at: str, problems: list[str]) -> dict[str, object] | None:
    if HOP_RE.fullmatch(hop) is None:
        problems.append(f"{at}: not a hop name; it {HOP_RULE}")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{at}: must be a mapping like {{after: checkout.placed, within: 30s}}")
        return None
    before = len(problems)
    problems += unknown_keys(at, spec, _STEP_KEYS)
    out: dict[str, object] = {}
    after = spec.get("after")
    if after is None:
        problems.append(f"{at}, field 'after': is required (the hop this step waits for)")
    elif not isinstance(after, str) or HOP_RE.fullmatch(after) is None:
        problems.append(f"{at}, field 'after': {after!r} is not a hop name; it {HOP_RULE}")
    out["after"] = after
    for key in ("within", "stall_after"):
        if key not in spec:
            if key == "within":
                problems.append(f"{at}, field 'within': is required ({DURATION_HELP})")
            continue
        try:
            ms = parse_duration(spec[key])
        except ValueError:
            problems.append(f"{at}, field {key!r}: {spec[key]!r} is not {DURATION_HELP}")
            continue
        if ms <= 0:
            problems.append(f"{at}, field {key!r}: must be longer than 0")
        elif ms > MAX_WITHIN_MS:
            problems.append(f"{at}, field {key!r}: {spec[key]!r} is longer than the longest allowed, 366d")
        out[key] = ms
    within, stall = out.get("within"), out.get("stall_after")
    if isinstance(within, int) and isinstance(stall, int) and stall >= within:
        problems.append(f"{at}, field 'stall_after': must be shorter than 'within' ({spec.get('within')})")
    confirmation = spec.get("confirmation", False)
    if not isinstance(confirmation, bool):
        problems.append(f"{at}, field 'confirmation': {confirmation!r} must be true or false")
    out["confirmation"] = confirmation
    return out if len(problems) == before else None


def _order_steps(start: str, steps: dict[str, dict[str, object]], at: str, problems: list[str]) -> list[str] | None:
    known = {start, *steps}
    for hop, spec in steps.items():
        if spec["after"] not in known:
            problems.append(
                f"{at}, step {hop!r}, field 'after': {spec['after']!r} is neither the start nor a step of "
                f"this journey; known hops: {', '.join(sorted(known))}"
            )
    if any(str(s["after"]) not in known for s in steps.values()):
        return None
    ordered: list[str] = []
    placed = {start}
    frontier = [start]
    while frontier:
        parent = frontier.pop(0)
        for hop, spec in steps.items():
            if spec["after"] == parent and hop not in placed:
                placed.add(hop)
                ordered.append(hop)
                frontier.append(hop)
    cyclic = [hop for hop in steps if hop not in placed]
    if cyclic:
        problems.append(
            f"{at}: steps {', '.join(map(repr, cyclic))} wait for each other in a cycle and never for "
            f"the start {start!r}"
        )
        return None
    return ordered


def _learning(spec: object, source: str, problems: list[str]) -> StallLearning:
    if spec is None:
        return StallLearning()
    at = f"{source}: stall_learning"
    if not isinstance(spec, dict):
        problems.append(f"{at}: must be a mapping with {', '.join(_LEARNING_KEYS)}")
        return StallLearning()
    problems += unknown_keys(at, spec, _LEARNING_KEYS)
    default = StallLearning()
    pct = spec.get("percentile", default.percentile)
    if isinstance(pct, bool) or not isinstance(pct, int | float) or not 50 <= pct < 100:
        problems.append(f"{at}, field 'percentile': {pct!r} must be a number from 50 up to (not including) 100")
        pct = default.percentile
    factor = spec.get("factor", default.factor)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1 <= factor <= 100:
        problems.append(f"{at}, field 'factor': {factor!r} must be a number from 1 to 100")
        factor = default.factor
    floor = default.floor_ms
    if "floor" in spec:
        try:
            floor = parse_duration(spec["floor"])
        except ValueError:
            problems.append(f"{at}, field 'floor': {spec['floor']!r} is not {DURATION_HELP}")
    samples = spec.get("min_samples", default.min_samples)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= 100_000:
        problems.append(f"{at}, field 'min_samples': {samples!r} must be a whole number from 1 to 100000")
        samples = default.min_samples
    return StallLearning(float(pct), float(factor), floor, samples)
