"""A normal (non-editable) install carries sql/ and can migrate a database."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_install_runs_migrate(tmp_path: Path, empty_db_url: str) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("exportd-*.whl")
    # The web pages and their assets ship inside the web package.
    with zipfile.ZipFile(wheel) as archive:
        shipped_files = set(archive.namelist())
    for page in ("my-exports.html", "admin.html", "assets/style.css", "assets/my-exports.js"):
        assert f"web/static/{page}" in shipped_files, page

    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Dependencies come from the test environment; exportd itself only from the wheel.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTD_", "PYTHON"))}
    env["EXPORTD_DATABASE_URL"] = empty_db_url
    where = subprocess.run(
        [str(python), "-c", "import daemon.db.queries as s; print(s.sql_dir())"],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert where == str(Path(site) / "daemon" / "sql")

    result = subprocess.run(
        [str(venv / "bin" / "exportd"), "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "applied 0002_views" in result.stdout
    with psycopg.connect(empty_db_url) as conn:
        shipped = len(list((ROOT / "sql" / "migrations").glob("*.up.sql")))
        assert conn.execute("SELECT count(*) FROM exportd.schema_migrations").fetchone() == (
            shipped,
        )
