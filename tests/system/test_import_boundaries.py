"""Import boundaries between the packages, read from the source (``ast``), not from a running import.

Neither plane imports the other, the shared package ``odock`` imports neither plane nor the CLI,
neither plane imports the CLI ``odockctl``, and the CLI imports neither plane (it is a gRPC client;
what it shares with the control plane lives in ``odock``). Every import counts: inside functions, under
``TYPE_CHECKING``, relative ones (resolved against the importing module). Only the generated
stubs (``odock/v1/*_pb2*.py``) are skipped. The second test plants bad imports in a temporary
tree, so the walker is shown to catch each kind.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("control_plane", "data_plane", "odock", "odockctl")
# importing package -> top-level packages it must not import.
FORBIDDEN: Mapping[str, frozenset[str]] = {
    "control_plane": frozenset({"data_plane", "odockctl"}),
    "data_plane": frozenset({"control_plane", "odockctl"}),
    "odock": frozenset({"control_plane", "data_plane", "odockctl"}),
    "odockctl": frozenset({"control_plane", "data_plane"}),
}


@dataclass(frozen=True)
class Import:
    path: str  # relative to the walked root
    line: int
    target: str  # the imported module, relative imports resolved

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}"


def _generated(rel: Path) -> bool:
    return rel.parts[:2] == ("odock", "v1") and "_pb2" in rel.name


def source_files(root: Path) -> Iterator[Path]:
    """Every ``.py`` file of the four packages under ``root``, generated stubs excepted."""
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if not _generated(path.relative_to(root)):
                yield path


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """The modules ``path`` imports, relative imports resolved against its own module name."""
    rel = path.relative_to(root)
    parts = list(rel.with_suffix("").parts)
    package = parts[:-1]  # a module's package; for __init__.py, the package itself
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(rel.as_posix(), node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                target = node.module or ""
            else:
                anchor = package[: len(package) - (node.level - 1)] if node.level - 1 <= len(package) else []
                target = ".".join([*anchor, *([node.module] if node.module else [])])
            yield Import(rel.as_posix(), node.lineno, target)


def violations(root: Path) -> list[Import]:
    """Every import under ``root`` that crosses a forbidden boundary."""
    found = []
    for path in source_files(root):
        importer = path.relative_to(root).parts[0]
        for imp in imports_of(root, path):
            if imp.target.split(".")[0] in FORBIDDEN[importer]:
                found.append(imp)
    return found


def test_no_import_crosses_a_package_boundary() -> None:
    seen = {path.relative_to(REPO).parts[0] for path in source_files(REPO)}
    assert seen == set(PACKAGES), f"packages without source files: {set(PACKAGES) - seen}"
    bad = violations(REPO)
    assert not bad, "imports across a package boundary:\n" + "\n".join(map(str, bad))


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        if parent != Path(".") and not (root / parent / "__init__.py").exists():
            (root / parent / "__init__.py").write_text("")
    path.write_text(text)


def test_the_walker_reports_each_kind_of_crossing(tmp_path: Path) -> None:
    _write(tmp_path, "control_plane/a.py", "import os\nimport data_plane.app\n")
    _write(tmp_path, "data_plane/b.py", "def f() -> None:\n    from control_plane import settings\n")
    _write(tmp_path, "data_plane/usage/c.py", "from ..limits import gate\nfrom odockctl.main import main\n")
    _write(tmp_path, "odock/d.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import data_plane\n")
    _write(tmp_path, "odock/e.py", "from . import keyformat\nfrom control_plane.x import y\n")
    _write(tmp_path, "odock/v1/x_pb2.py", "import data_plane\n")  # generated: skipped
    _write(tmp_path, "odockctl/f.py", "from odock import version\nimport control_plane\n")
    _write(tmp_path, "control_plane/__init__.py", "from .store import db\nimport odockctl.apply\n")
    found = {str(imp) for imp in violations(tmp_path)}
    assert found == {
        "control_plane/a.py:2 imports data_plane.app",
        "data_plane/b.py:2 imports control_plane",
        "data_plane/usage/c.py:2 imports odockctl.main",
        "odock/d.py:3 imports data_plane",
        "odock/e.py:2 imports control_plane.x",
        "control_plane/__init__.py:2 imports odockctl.apply",
        "odockctl/f.py:2 imports control_plane",
    }
    resolved = {str(imp) for path in source_files(tmp_path) for imp in imports_of(tmp_path, path)}
    assert "data_plane/usage/c.py:1 imports data_plane.limits" in resolved
    assert "odock/e.py:1 imports odock" in resolved
    assert "control_plane/__init__.py:1 imports control_plane.store" in resolved
