"""``data_plane/limits/`` knows nothing of HTTP: the request's exchange carries the admission and the app
stamps its headers (``Admission.write_headers``), so no limits module imports aiohttp, not even for types."""

from __future__ import annotations

import ast
from pathlib import Path

LIMITS = Path(__file__).resolve().parents[3] / "data_plane" / "limits"


def aiohttp_imports(path: Path) -> list[int]:
    """Lines of ``path`` that import aiohttp or one of its modules."""
    lines = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name.split(".")[0] == "aiohttp" for name in names):
            lines.append(node.lineno)
    return lines


def test_no_limits_module_imports_aiohttp() -> None:
    files = sorted(LIMITS.glob("*.py"))
    assert len(files) >= 5, f"no limits package under {LIMITS}"
    found = {f.name: lines for f in files if (lines := aiohttp_imports(f))}
    assert found == {}
