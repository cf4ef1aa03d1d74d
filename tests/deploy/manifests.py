"""Reading deploy/ for its tests: the compose file, the Kubernetes manifests, and the ordertrail
commands they run, checked against the real command-line parser."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ordertrail.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ROLES = ("ingest", "tracer", "detectors", "lookup-server")
# Files that the observability branch adds to dashboards/; deploy/ mounts them.
DASHBOARDS = (
    "dashboards/provisioning/datasources/datasources.yaml",
    "dashboards/provisioning/dashboards/dashboards.yaml",
    "dashboards/json",
    "dashboards/prometheus/rules.yml",
)


def version() -> str:
    """ordertrail's version: its image is tagged with it."""
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return str(project["version"])


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def k8s_documents() -> list[dict[str, Any]]:
    """Every resource of the manifests that kustomization.yaml lists, in order."""
    docs = []
    for name in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job"))


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = spec["containers"] + spec.get("initContainers", [])
    return found


def image_tag(image: str) -> str:
    """The tag of an image reference ('' when it has none)."""
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def port_of(url: str) -> tuple[str, int]:
    m = re.fullmatch(r"[a-z]+://([\w.-]+):(\d+)(/.*)?", url)
    assert m is not None, f"{url!r} names no host:port"
    return m[1], int(m[2])


def parse_role(args: list[str]) -> argparse.Namespace | None:
    """The arguments parsed by ``ordertrail``'s own parser; None when the role is not built yet.
    A usage error fails with argparse's message."""
    if args[0] not in {c.name for c in COMMANDS}:
        return None
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(args)
    except SystemExit:
        raise AssertionError(f"ordertrail {' '.join(args)}: {err.getvalue().strip()}") from None
