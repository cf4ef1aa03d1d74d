"""Every PromQL expression of the dashboards and rules parses with promtool and asks only for
series that a real ``ordertrail run`` exports: the test starts one (demo journeys, embedded bus
and chDB), sends it events, scrapes ``/metrics``, and checks each metric name an expression
names, and each label it matches on, against that scrape. Histogram and counter series
(``_bucket``, ``_sum``, ``_count``, ``_total``) and the rules' recorded series are known as such."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.dashboards.grafana import RULES_FILE, dashboard_promql, recorded_names, rule_expressions

pytestmark = pytest.mark.integration

SCRAPED_BY_PROMETHEUS = {"up"}  # series Prometheus makes itself for every target
# The detectors' collector exports these; until it is wired into `ordertrail run` they may be
# absent, and then all three are (a partial set is a real mismatch).
DETECTORS = {"ordertrail_incidents_open", "ordertrail_alerts_sent_total", "ordertrail_alerts_failed_total"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_BRACES = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = _GROUPING.sub(" ", _RANGE.sub(" ", _BRACES.sub(" ", text)))
    names = set()
    for m in _IDENT.finditer(text):
        rest = text[m.end() :].lstrip()
        if m.group(0) not in KEYWORDS and not rest.startswith("("):
            names.add(m.group(0))
    return names


def matched_labels(expr: str) -> Iterator[tuple[str, str]]:
    """(series name, label name) of every label matcher of a selector."""
    text = _STRING.sub('""', expr)
    for m in _SELECTOR.finditer(text):
        for label in _MATCHER.findall(m.group(2)):
            yield m.group(1), label


def test_the_name_extraction_sees_series_and_skips_the_rest() -> None:
    expr = (
        'sum by (journey, hop, le) (rate(a_bucket{hop=~"x|y", le="5.0"}[5m])) / on (journey) group_left '
        "b:rec:ratio > 14.4 * (1 - c) and histogram_quantile(0.99, d) or vector(1)"
    )
    assert metric_names(expr) == {"a_bucket", "b:rec:ratio", "c", "d"}
    assert set(matched_labels(expr)) == {("a_bucket", "hop"), ("a_bucket", "le")}


@pytest.fixture(scope="module")
def exposed(scrape: str) -> dict[str, set[str]]:
    """Every series name in the scrape -> its label names."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scrape):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard query, variable query and rule."""
    return dashboard_promql() + [(f"rules.yml: {name}", expr) for name, expr in rule_expressions()]


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: scripts/setup.sh installs Debian's prometheus package"
    exprs = expressions()
    rules = {
        "groups": [{"name": "parse", "rules": [{"record": f"parse_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]
    }
    path = tmp_path / "parse.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        bad = [f"{where}: {e}" for i, (where, e) in enumerate(exprs) if f"parse_{i}" in out.stdout + out.stderr]
        raise AssertionError(f"promtool refuses:\n{out.stdout}{out.stderr}\n" + "\n".join(bad))


def detectors_wired(exposed: dict[str, set[str]]) -> bool:
    """Whether the run exports the detectors' metrics (under the agreed names, or any other)."""
    return bool(DETECTORS & set(exposed)) or any(n.startswith("ordertrail_detector") for n in exposed)


def test_every_series_an_expression_names_is_exported(exposed: dict[str, set[str]]) -> None:
    known = set(exposed) | recorded_names() | SCRAPED_BY_PROMETHEUS
    if not detectors_wired(exposed):
        known |= DETECTORS
    missing = [(where, name) for where, e in expressions() for name in sorted(metric_names(e) - known)]
    assert not missing, "series no /metrics exports:\n" + "\n".join(f"{w}: {n}" for w, n in missing)


def test_every_label_an_expression_matches_on_is_exported(exposed: dict[str, set[str]]) -> None:
    wrong = [
        (where, name, label)
        for where, e in expressions()
        for name, label in matched_labels(e)
        if name in exposed and label not in exposed[name]
    ]
    assert not wrong, "\n".join(f"{w}: {n} has no label {lb!r}" for w, n, lb in wrong)


def test_the_detectors_metrics_come_all_or_none(exposed: dict[str, set[str]]) -> None:
    present = DETECTORS & set(exposed)
    if detectors_wired(exposed):
        assert present == DETECTORS, f"the dashboards and rules use {sorted(DETECTORS)}; exported: {sorted(present)}"


def test_the_scrape_has_the_metrics_the_dashboards_are_built_on(exposed: dict[str, set[str]]) -> None:
    for name in (
        "ordertrail_hop_events_total",
        "ordertrail_orders_waiting",
        "ordertrail_findings_raised_total",
        "ordertrail_edge_transit_seconds_bucket",
        "ordertrail_pipeline_lag_seconds",
        "ordertrail_store_write_duration_seconds_bucket",
        "ordertrail_store_errors_total",
        "ordertrail_events_rejected_total",
    ):
        assert name in exposed, name
    assert exposed["ordertrail_hop_events_total"] == {"hop", "status"}
    assert exposed["ordertrail_edge_transit_seconds_bucket"] == {"journey", "hop", "le"}


def test_the_scrape_counts_what_the_run_was_sent(scrape: str) -> None:
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
    }
    assert values[("ordertrail_ingest_events_total", (("result", "accepted"),))] == 6
    assert values[("ordertrail_ingest_events_total", (("result", "rejected"),))] == 1
    assert values[("ordertrail_events_duplicate_total", ())] == 1
    assert values[("ordertrail_hop_events_total", (("hop", "payment.authorized"), ("status", "error")))] == 1
    assert values[("ordertrail_hop_events_total", (("hop", "other"), ("status", "ok")))] == 1
    assert values[("ordertrail_findings_raised_total", (("kind", "failed"),))] == 1


def test_each_objective_names_an_edge_and_a_bucket_bound_that_are_exported(scrape: str) -> None:
    edges, bounds = set(), set()
    for family in text_string_to_metric_families(scrape):
        for s in family.samples:
            if s.name == "ordertrail_edge_transit_seconds_bucket":
                edges.add((s.labels["journey"], s.labels["hop"]))
                bounds.add(s.labels["le"])
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    objectives = [
        r["labels"]
        for g in doc["groups"]
        for r in g["rules"]
        if r.get("record") == "ordertrail:objective_latency:target_ratio"
    ]
    assert objectives
    for labels in objectives:
        assert (labels["journey"], labels["hop"]) in edges, labels
        assert labels["le"] in bounds, f"{labels}: le must be one of {sorted(bounds, key=float)}"
