"""The compiled hot path: which tracer modules setup.py compiles with mypyc, and the guard that
keeps a build that no longer matches its source from running (docs/performance.md).

The build (``setup.py``, run by ``pip install``) compiles ``MODULES`` into C extensions next to
their source (``tracer/engine.cpython-311-….so`` and the shared ``tracer/_hot__mypyc….so``) and
writes ``tracer/_native.json``: a hash of every source the compiled code was built from (the
modules and the tracer modules they import, whose constants mypyc may inline), or why nothing
was compiled. Python prefers an extension module over the ``.py`` beside it, so an edited source
would silently run its old build: ``guard()``, called by ``tracer/__init__.py`` before any of
``MODULES`` is imported, checks the hashes and, when they differ (or ``ORDERTRAIL_PURE_PYTHON=1``),
imports every one of ``MODULES`` from its ``.py`` instead. All or none: compiled modules call one
another natively, so a mix of compiled and source modules is never loaded.

``tracer.native.status()`` says which runs (scripts/setup.sh prints it). This module imports only
the standard library: setup.py loads it by path, before the project or its dependencies are
installed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.abc import MetaPathFinder
from pathlib import Path
from types import ModuleType
from typing import Final

MODULES: Final = (
    "tracer.times",
    "tracer.ids",
    "tracer.deadlines",
    "tracer.transit",
    "tracer.clock",
    "tracer.events",
    "tracer.engine",
    "tracer.waiting",  # a Tracer subclass: an interpreted class cannot inherit from a compiled one
    "tracer.stitch",  # in front of the engine on every event of a journey with keys
    "tracer.kafkawire",  # every record read from Kafka
)
GROUP: Final = "tracer._hot"  # the shared library of the compiled modules: tracer/_hot__mypyc.*.so
MANIFEST: Final = "_native.json"  # in tracer/, beside the extensions
PURE_ENV: Final = "ORDERTRAIL_PURE_PYTHON"
PACKAGE_DIR: Final = Path(__file__).resolve().parent

_state: dict[str, str] = {"status": "not checked"}


def pure_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``ORDERTRAIL_PURE_PYTHON`` asks for pure Python (set, and not ``0``/empty)."""
    return environ.get(PURE_ENV, "") not in ("", "0")


def sources(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The tracer sources the compiled code depends on: ``MODULES`` and, transitively, the
    tracer modules they import (file names relative to the package, sorted)."""
    todo = [m.rpartition(".")[2] for m in MODULES]
    found: set[str] = set()
    while todo:
        name = todo.pop()
        if name in found or not (package_dir / f"{name}.py").is_file():
            continue
        found.add(name)
        tree = ast.parse((package_dir / f"{name}.py").read_bytes())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[0] == "tracer":
                    todo.extend(parts[1:2] or [alias.name for alias in node.names])
            elif isinstance(node, ast.Import):
                todo.extend(a.name.split(".")[1] for a in node.names if a.name.startswith("tracer."))
    return sorted(f"{name}.py" for name in found)


def source_hashes(package_dir: Path = PACKAGE_DIR, names: Sequence[str] | None = None) -> dict[str, str]:
    return {
        name: hashlib.sha256((package_dir / name).read_bytes()).hexdigest() if (package_dir / name).is_file() else ""
        for name in (sources(package_dir) if names is None else names)
    }


def extensions(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The compiled files present in the package: the modules' extensions and the shared library."""
    stems = [m.rpartition(".")[2] for m in MODULES] + [GROUP.rpartition(".")[2] + "__mypyc"]
    return sorted(
        p
        for stem in stems
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
        if (p := package_dir / (stem + suffix)).exists()
    )


def write_manifest(package_dir: Path, *, compiled: bool, reason: str = "") -> None:
    """Called by the build: the sources it read and what came of them (why nothing was compiled)."""
    data = {
        "compiled": compiled,
        "modules": list(MODULES) if compiled else [],
        "reason": reason,
        "sources": source_hashes(package_dir),
    }
    (package_dir / MANIFEST).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def check(package_dir: Path = PACKAGE_DIR) -> tuple[bool, str]:
    """(whether the compiled modules are to be used, a sentence saying what runs and why)."""
    if pure_requested():
        return False, f"pure Python ({PURE_ENV} is set)"
    try:
        manifest = json.loads((package_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    if not extensions(package_dir):
        return False, f"pure Python ({manifest.get('reason') or 'not compiled'})"
    recorded = manifest.get("sources")
    if not manifest.get("compiled") or manifest.get("modules") != list(MODULES) or not isinstance(recorded, dict):
        return False, f"pure Python (the compiled modules in {package_dir} have no matching {MANIFEST}: rebuild)"
    now = source_hashes(package_dir, sorted(recorded))
    # A source newly imported could only come with an edit to one recorded: the hashes suffice.
    changed = [name for name in sorted(recorded) if recorded[name] != now[name]]
    if changed:
        what = ", ".join(changed)
        return False, f"pure Python ({what} changed since the compiled modules were built: `make setup` rebuilds)"
    return True, "compiled with mypyc: " + ", ".join(MODULES)


class _SourceFinder(MetaPathFinder):
    """Imports ``MODULES`` from their ``.py`` files, ahead of the extensions beside them."""

    def __init__(self, package_dir: Path) -> None:
        self._dir = package_dir

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, self._dir / (fullname.rpartition(".")[2] + ".py"))


def guard() -> None:
    """Decide once, before the first of ``MODULES`` is imported, between the compiled modules and
    their source; a stale build is said on stderr (a fresh one and a pure install say nothing)."""
    if _state["status"] != "not checked":
        return
    usable, status = check()
    _state["status"] = status
    if usable or not extensions():
        return
    if any(m in sys.modules for m in MODULES):  # pragma: no cover - tracer/__init__ calls this first
        return
    sys.meta_path.insert(0, _SourceFinder(PACKAGE_DIR))
    if not pure_requested():  # a stale or unmatched build: say so, the hot path runs slower
        print(f"ordertrail: the tracer's hot path runs in {status}", file=sys.stderr)


def status() -> str:
    """What runs the hot path in this process: compiled, or pure Python and why."""
    return check()[1] if _state["status"] == "not checked" else _state["status"]
