"""The boundaries of ARCHITECTURE.md, checked on every file of `daemon` and `web`.

`make check` runs import-linter's contracts (pyproject.toml) too; these tests
state the same rules in plain Python, cover modules nobody listed in a
contract yet, and prove the checker really fails on a forbidden import.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ("psycopg", "psycopg_pool")
SQL_WORDS = re.compile(
    r"\b(SELECT|UPDATE|INSERT|DELETE FROM|LISTEN|NOTIFY|SET statement_timeout)\b"
)


def imported_modules(source: str, filename: str = "<source>") -> set[str]:
    """Every absolute module a file imports (at any depth of its code)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def python_files(*packages: str) -> list[Path]:
    return sorted(path for p in packages for path in (ROOT / p).rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imports_any(path: Path, prefixes: tuple[str, ...]) -> bool:
    modules = imported_modules(path.read_text(), str(path))
    return any(m == p or m.startswith(p + ".") for m in modules for p in prefixes)


def offenders(
    packages: tuple[str, ...], forbidden: tuple[str, ...], *, allowed: str = ""
) -> set[str]:
    return {
        relative(path)
        for path in python_files(*packages)
        if not (allowed and relative(path).startswith(allowed)) and imports_any(path, forbidden)
    }


def test_the_checker_sees_a_forbidden_import() -> None:
    # A test that cannot fail proves nothing: the same function on a file
    # with a forbidden import (nested in a function, as a from-import).
    source = "def f():\n    from psycopg import sql\n    import daemon.worker.pipeline\n"
    modules = imported_modules(source)
    assert "psycopg" in modules and "daemon.worker.pipeline" in modules


def test_daemon_never_imports_web() -> None:
    assert offenders(("daemon",), ("web",)) == set()


def test_only_the_database_seam_imports_the_driver() -> None:
    assert offenders(("daemon", "web"), DRIVER, allowed="daemon/db/") == set()


def test_web_never_imports_procrastinate_or_the_worker() -> None:
    forbidden = ("procrastinate", "daemon.worker", "daemon.maintenance", "daemon.cli")
    assert offenders(("web",), forbidden) == set()


def test_kinds_storage_and_db_stay_below_the_worker() -> None:
    forbidden = ("procrastinate", "daemon.worker", "daemon.maintenance", "daemon.cli", "web")
    packages = ("daemon/kinds", "daemon/storage", "daemon/db")
    assert offenders(packages, forbidden) == set()
    assert not imports_any(ROOT / "daemon" / "actions.py", forbidden)


def test_no_sql_text_outside_the_sql_directory() -> None:
    found = {
        f"{relative(path)}:{number}"
        for path in python_files("daemon", "web")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SQL_WORDS.search(line)
    }
    assert found == set()


def test_a_query_file_is_run_by_the_db_module_of_its_name() -> None:
    call = re.compile(r"named_queries\(\"([a-z_]+)\"\)")
    seen: dict[str, set[str]] = {}
    for path in python_files("daemon", "web"):
        for name in call.findall(path.read_text()):
            seen.setdefault(name, set()).add(relative(path))
    files = {p.stem for p in (ROOT / "sql" / "queries").glob("*.sql")}
    assert set(seen) == files, "a query file nobody runs, or a call to a missing file"
    for name, users in seen.items():
        assert users == {f"daemon/db/{name}.py"}, name


def modules_loaded_by(script: str) -> str:
    """What `script` prints, run in a fresh interpreter (nothing loaded before it)."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_api_app_builds_without_loading_the_worker() -> None:
    # A fresh interpreter: what building the app imports, and nothing else.
    script = """
import sys
from daemon.config import load_settings
from daemon.kinds.catalog import load_kinds
from web.app import create_app
settings = load_settings({
    "EXPORTD_JWT_SECRET": "a-layers-test-secret-of-more-than-32-bytes-7f3e",
    "EXPORTD_DATABASE_URL": "postgresql:///x",
})
create_app(settings, "postgresql:///x", load_kinds(settings, "postgresql:///x"))
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] == "procrastinate"
                or m.startswith(("daemon.worker", "daemon.maintenance", "daemon.cli")))
print(",".join(loaded))
"""
    assert modules_loaded_by(script) == ""


def test_the_web_command_does_not_load_the_worker() -> None:
    script = """
import sys
from daemon.cli import main
main.build_parser()
import daemon.cli.web, daemon.cli.serve
print(",".join(sorted(m for m in sys.modules
                      if m.split(".")[0] == "procrastinate" or m.startswith("daemon.worker"))))
"""
    assert modules_loaded_by(script) == ""
