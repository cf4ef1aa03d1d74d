"""Compiles the tracer's hot path with mypyc (docs/performance.md); the rest of the project's
metadata is in pyproject.toml.

pip runs this for ``pip install .`` and ``pip install -e .`` (the extensions then land beside
their source, in tracer/); ``python setup.py build_ext --inplace`` rebuilds them (the Makefile
does when a tracer source changed). The modules are listed in ``tracer/native.py``, which also
keeps a stale build from running. ``ORDERTRAIL_PURE_PYTHON=1`` skips compiling. When compiling is
impossible here (no C compiler or Python headers, mypyc refuses a module) the install goes on in
pure Python, the same code only slower, and says why: ``python -m tracer.native`` tells later.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
os.chdir(ROOT)  # mypyc takes the sources and writes its C files (build/) relative to here


def _load_native() -> ModuleType:
    """tracer/native.py by path: importing the package would need what is not installed yet."""
    spec = importlib.util.spec_from_file_location("_ordertrail_native", ROOT / "tracer" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


native = _load_native()


def _say(text: str) -> None:
    print(f"ordertrail setup: {text}", file=sys.stderr)


def _mypyc_extensions() -> tuple[list[Extension], str]:
    """The extensions of the compiled hot path, or none and why."""
    if native.pure_requested():
        return [], f"{native.PURE_ENV} is set"
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        return [], f"mypyc (the mypy package) is not installed: {exc}"
    paths = [f"tracer/{name.rpartition('.')[2]}.py" for name in native.MODULES]
    try:
        return mypycify(paths, group_name=native.GROUP, opt_level="3", debug_level="0"), ""
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error; any failure means pure Python
        return [], f"mypyc could not compile {', '.join(paths)}: {exc!r}"


class _BuildHotPath(build_ext):
    """build_ext that never fails the install: the compiled modules are all built or none is,
    and tracer/_native.json records the sources they came from (or why there are none)."""

    reason = ""

    def run(self) -> None:
        if not self.extensions:
            return  # nothing to compile: said, and recorded, when setup.py was read
        inplace = bool(self.inplace or getattr(self, "editable_mode", False))
        package_dir = ROOT / "tracer" if inplace else Path(self.build_lib) / "tracer"
        package_dir.mkdir(parents=True, exist_ok=True)
        reason = ""
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python.h, a compile error: pure Python then
            reason = self.reason = f"the C build failed: {exc}"
        if reason:
            self._remove_built(package_dir)
            _say(f"the tracer's hot path stays pure Python ({reason}); the same code, only slower")
        else:
            _say(f"compiled with mypyc: {', '.join(native.MODULES)}")
        native.write_manifest(package_dir, compiled=not reason, reason=reason)

    def _remove_built(self, package_dir: Path) -> None:
        for path in native.extensions(package_dir):
            path.unlink()

    def get_outputs(self) -> list[str]:
        return [] if self.reason else list(super().get_outputs())

    def get_output_mapping(self) -> dict[str, str]:
        return {} if self.reason else dict(super().get_output_mapping())


_extensions, _BuildHotPath.reason = _mypyc_extensions()
if _BuildHotPath.reason:
    # Without extensions setuptools runs no build_ext: say it here, and leave no earlier build
    # in the source tree to be picked up instead.
    for _path in native.extensions(ROOT / "tracer"):
        _path.unlink()
    native.write_manifest(ROOT / "tracer", compiled=False, reason=_BuildHotPath.reason)
    _say(f"the tracer's hot path stays pure Python ({_BuildHotPath.reason}); the same code, only slower")

setup(ext_modules=_extensions, cmdclass={"build_ext": _BuildHotPath})
