"""The three rooms: engine and train never import Qt; app never imports train."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QT_MODULES = {"PySide6", "PySide2", "PyQt5", "PyQt6", "pyqtgraph", "qtpy", "shiboken6"}


def imported_modules(package: str) -> dict[str, set[str]]:
    """Top-level module names imported anywhere in a package, per file (AST, so lazy imports count)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "__import__"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package", ["engine", "train"])
def test_engine_and_train_never_import_qt(package):
    offenders = {f: sorted(n & QT_MODULES) for f, n in imported_modules(package).items() if n & QT_MODULES}
    assert not offenders, f"{package} must stay Qt-free: {offenders}"


def test_app_never_imports_train():
    offenders = [f for f, names in imported_modules("app").items() if "train" in names]
    assert not offenders, f"app must not import train: {offenders}"


def test_engine_never_imports_app_or_train():
    offenders = {f: sorted(n & {"app", "train"}) for f, n in imported_modules("engine").items() if n & {"app", "train"}}
    assert not offenders, f"engine depends on nothing above it: {offenders}"


def test_importing_every_engine_and_train_module_loads_no_qt():
    """Catch Qt pulled in indirectly (through a dependency), which the AST walk cannot see."""
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for pkg in ("engine", "train")
        for p in (ROOT / pkg).rglob("*.py")
        if p.name != "__main__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m.removesuffix('.__init__'))\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(QT_MODULES)!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Qt modules loaded by engine/train imports: {out.stdout.strip()}"
