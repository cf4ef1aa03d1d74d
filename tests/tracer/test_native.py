"""The compiled hot path (tracer/native.py): a build runs only while it matches its sources, all
modules or none, and ``ORDERTRAIL_PURE_PYTHON=1`` runs the source. The subprocess tests copy the
package with its build (when this checkout has one) and edit the copy, never the checkout."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tracer import native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
BUILT = bool(native.extensions())


def fake_build(tmp_path: Path) -> Path:
    """The package's sources with an empty file standing for each compiled module."""
    pkg = tmp_path / "tracer"
    shutil.copytree(native.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("*.so", "*.json", "__pycache__"))
    for name in [*native.MODULES, native.GROUP + "__mypyc"]:
        (pkg / (name.rpartition(".")[2] + SUFFIX)).touch()
    return pkg


def test_the_sources_are_the_compiled_modules_and_the_tracer_modules_they_import() -> None:
    found = native.sources()
    assert {m.rpartition(".")[2] + ".py" for m in native.MODULES} <= set(found)
    assert {"model.py", "wire.py", "journeys.py"} <= set(found)  # imported: mypyc may inline their constants
    assert "clickhouse.py" not in found


def test_a_build_is_used_while_its_sources_are_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    pkg = fake_build(tmp_path)
    native.write_manifest(pkg, compiled=True)
    assert native.check(pkg) == (True, "compiled with mypyc: " + ", ".join(native.MODULES))


def test_an_edited_source_makes_the_build_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    pkg = fake_build(tmp_path)
    native.write_manifest(pkg, compiled=True)
    with (pkg / "model.py").open("a") as f:
        f.write("\n# edited\n")
    usable, why = native.check(pkg)
    assert not usable
    assert "model.py changed since the compiled modules were built" in why


def test_a_build_without_its_manifest_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    usable, why = native.check(fake_build(tmp_path))
    assert not usable
    assert "no matching _native.json" in why


def test_a_failed_build_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    pkg = tmp_path / "tracer"
    shutil.copytree(native.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("*.so", "*.json", "__pycache__"))
    native.write_manifest(pkg, compiled=False, reason="the C build failed: no gcc")
    assert native.check(pkg) == (False, "pure Python (the C build failed: no gcc)")
    assert json.loads((pkg / native.MANIFEST).read_text())["compiled"] is False


def test_pure_python_is_asked_for_with_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not native.pure_requested({})
    assert not native.pure_requested({native.PURE_ENV: "0"})
    assert native.pure_requested({native.PURE_ENV: "1"})
    monkeypatch.setenv(native.PURE_ENV, "1")
    assert native.check() == (False, f"pure Python ({native.PURE_ENV} is set)")


def test_this_process_runs_what_the_check_allows() -> None:
    usable, _ = native.check()
    files = [str(importlib.import_module(m).__file__) for m in native.MODULES]
    assert all(f.endswith(".py") != usable for f in files), files


def _where(pkg_parent: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import tracer.engine, tracer.events, tracer.native; print(tracer.engine.__file__, tracer.events.__file__)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=pkg_parent, env=env, capture_output=True, text=True, check=True, timeout=60
    )


@pytest.mark.skipif(not BUILT, reason="no compiled build in this checkout (pure Python install)")
def test_an_edited_copy_runs_its_source_and_says_so(tmp_path: Path) -> None:
    pkg = tmp_path / "tracer"
    shutil.copytree(native.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    fresh = _where(tmp_path, env)
    assert fresh.stdout.split() == [str(pkg / f"engine{SUFFIX}"), str(pkg / f"events{SUFFIX}")]
    assert fresh.stderr == ""
    with (pkg / "engine.py").open("a") as f:
        f.write("\n# edited after the build\n")
    stale = _where(tmp_path, env)
    assert stale.stdout.split() == [str(pkg / "engine.py"), str(pkg / "events.py")]  # all or none
    assert "engine.py changed since the compiled modules were built" in stale.stderr


@pytest.mark.skipif(not BUILT, reason="no compiled build in this checkout (pure Python install)")
def test_the_environment_variable_runs_the_source_quietly(tmp_path: Path) -> None:
    pkg = tmp_path / "tracer"
    shutil.copytree(native.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    pure = _where(tmp_path, {**os.environ, native.PURE_ENV: "1"})
    assert pure.stdout.split() == [str(pkg / "engine.py"), str(pkg / "events.py")]
    assert pure.stderr == ""
