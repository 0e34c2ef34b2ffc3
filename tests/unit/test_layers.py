"""`web` imports `daemon`, never the reverse (DESIGN §1), and handlers and the
pipeline never talk to psycopg except through the store modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_daemon_never_imports_web() -> None:
    offenders = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "daemon").rglob("*.py")
        if any(name == "web" or name.startswith("web.") for name in imported_modules(path))
    }
    assert offenders == set()


def test_pipeline_and_kinds_do_not_import_the_http_layer_or_starlette() -> None:
    for name in ("pipeline.py", "kinds.py", "packaging.py", "storage.py", "queue.py"):
        modules = imported_modules(ROOT / "daemon" / name)
        assert not any(m.startswith(("starlette", "uvicorn", "web")) for m in modules), name
