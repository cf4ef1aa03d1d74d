"""The dashboards as the tests read them: every panel (inside rows too), every query with the
datasource it goes to (panel targets and query variables), and Grafana's variables and macros
expanded as Grafana and the ClickHouse plugin expand them (the subset our dashboards use; an
unknown ``$`` left over fails the expansion, so a new macro cannot slip past the tests)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

ROOT = Path(__file__).resolve().parents[2] / "dashboards"
DASHBOARD_FILES = sorted((ROOT / "json").glob("*.json"))
DATASOURCES_FILE = ROOT / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS_FILE = ROOT / "provisioning" / "dashboards" / "dashboards.yaml"
RULES_FILE = ROOT / "prometheus" / "rules.yml"
RULES_TEST_FILE = ROOT / "prometheus" / "rules_test.yml"
PROMETHEUS = "prometheus"
CLICKHOUSE = "clickhouse"


@dataclass(frozen=True)
class Query:
    dashboard: str  # the dashboard's uid
    panel: Mapping[str, Any] | None  # None for a variable's query
    ref: str  # refId, or the variable's name
    datasource: str  # uid
    text: str  # PromQL or SQL, as written

    @property
    def where(self) -> str:
        if self.panel is None:
            return f"{self.dashboard}: variable {self.ref}"
        return f"{self.dashboard}: panel {self.panel['id']} {self.panel['title']!r} query {self.ref}"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def dashboards() -> list[dict[str, Any]]:
    return [load(p) for p in DASHBOARD_FILES]


def panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())  # a collapsed row keeps its panels inside


def uid_of(ref: Any) -> str | None:
    return ref.get("uid") if isinstance(ref, dict) else None


def queries(dashboard: Mapping[str, Any]) -> Iterator[Query]:
    uid = dashboard["uid"]
    for panel in panels(dashboard):
        for target in panel.get("targets", ()):
            ds = uid_of(target.get("datasource")) or uid_of(panel.get("datasource"))
            text = target.get("expr") if "expr" in target else target.get("rawSql")
            assert ds is not None and text, f"{uid}: panel {panel['id']} target {target.get('refId')}"
            yield Query(uid, panel, target["refId"], ds, text)
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            text = q["query"] if isinstance(q, dict) else q
            ds = uid_of(var.get("datasource"))
            assert ds is not None, f"{uid}: variable {var['name']} has no datasource uid"
            yield Query(uid, None, var["name"], ds, text)


def variables(dashboard: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


# -- expansion ----------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
_MACRO_ARG = re.compile(r"\$(__timeFilter|__timeInterval)\(([^)]*)\)")


def _format(values: Sequence[str], fmt: str | None) -> str:
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt in (None, "raw"):
        return values[0] if len(values) == 1 else "(" + "|".join(values) + ")"
    raise AssertionError(f"variable format {fmt!r} is not one the tests expand")


def expand(text: str, values: Mapping[str, Sequence[str]], *, sql: bool, from_s: int = 0, to_s: int = 0) -> str:
    """``text`` with Grafana's variables (``values``) and macros replaced."""
    if sql:
        interval_s = max(1, (to_s - from_s) // 100)

        def macro(m: re.Match[str]) -> str:
            col = m.group(2).strip()
            if m.group(1) == "__timeFilter":
                return f"{col} >= toDateTime({from_s}) AND {col} <= toDateTime({to_s})"
            return f"toStartOfInterval(toDateTime({col}), INTERVAL {interval_s} second)"

        text = _MACRO_ARG.sub(macro, text)
        text = text.replace("$__fromTime", f"toDateTime({from_s})").replace("$__toTime", f"toDateTime({to_s})")
    else:
        for macro_name, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h")):
            text = text.replace(macro_name, value)

    def var(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name not in values:
            raise AssertionError(f"unknown variable or macro ${name} in: {text}")
        return _format(values[name], m.group(2))

    return _VAR.sub(var, text)


def rule_expressions() -> list[tuple[str, str]]:
    """(record or alert name, expression) of every rule in rules.yml."""
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return [(r.get("record") or r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def recorded_names() -> set[str]:
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


# Values for the dashboards' variables when their PromQL is checked.
PROMQL_VALUES: Final = {"journey": ["web_order", "refund"], "hop": ["payment.authorized"], "database": ["ordertrail"]}
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", re.S)


def dashboard_promql() -> list[tuple[str, str]]:
    """(where, PromQL) of every Prometheus query of the dashboards, variables expanded; a
    variable's ``label_values(SELECTOR, label)`` gives its selector."""
    out = []
    for d in dashboards():
        for q in queries(d):
            if q.datasource == PROMETHEUS:
                text = expand(q.text, PROMQL_VALUES, sql=False)
                m = _LABEL_VALUES.match(text)
                out.append((q.where, m.group(1) if m else text))
    return out
