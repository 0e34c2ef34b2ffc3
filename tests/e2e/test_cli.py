"""The real `exportd` command in subprocesses, as an operator runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest

from tests.e2e.processes import EXPORTD, free_port

SECRET = "a-test-secret-that-is-long-enough-0123456789"
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "sql" / "migrations"
# (version, name) of every migration, in order.
MIGRATIONS = sorted(
    (stem[:4], stem[5:])
    for stem in (path.name.removesuffix(".up.sql") for path in MIGRATIONS_DIR.glob("*.up.sql"))
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
    env.update(extra)
    return env


def run(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXPORTD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_help_lists_the_commands() -> None:
    result = run("--help", env=clean_env())
    assert result.returncode == 0
    for command in ("up", "migrate", "token"):
        assert command in result.stdout


def test_python_dash_m_daemon_is_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "migrate", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "--status" in result.stdout and "--down" in result.stdout


def test_migrate_then_status_lists_every_migration_as_applied(empty_db_url: str) -> None:
    env = clean_env(EXPORTD_DATABASE_URL=empty_db_url)
    first = run("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_jobs" in first.stdout and "applied 0002_views" in first.stdout
    status = run("migrate", "--status", env=env)
    assert status.returncode == 0
    rows = [line.split() for line in status.stdout.splitlines()[1:] if line[:4].isdigit()]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (version, name, "applied") for version, name in MIGRATIONS
    ]
    assert MIGRATIONS[:4] == [
        ("0001", "jobs"),
        ("0002", "views"),
        ("0003", "queue_tracking"),
        ("0004", "retention"),
    ]
    assert "procrastinate schema: 0 pending" in status.stdout
    again = run("migrate", env=env)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_migrate_down_and_status(empty_db_url: str) -> None:
    env = clean_env(EXPORTD_DATABASE_URL=empty_db_url)
    assert run("migrate", env=env).returncode == 0
    down = run("migrate", "--down", "1", env=env)
    assert down.returncode == 0
    assert down.stdout.splitlines() == [
        f"rolled back {version}_{name}" for version, name in reversed(MIGRATIONS[1:])
    ]
    status = run("migrate", "--status", env=env).stdout
    assert "0002     views" in status and "pending" in status


def test_edited_migration_stops_migrate_with_one_line(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE exportd.schema_migrations SET checksum = 'x' WHERE version = 2")
    result = run("migrate", env=clean_env(EXPORTD_DATABASE_URL=db_url))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "0002_views.up.sql was edited after it was applied" in result.stderr


def test_unreachable_database_is_one_line_and_non_zero() -> None:
    env = clean_env(EXPORTD_DATABASE_URL="postgresql://exportd:hunter2@127.0.0.1:9/exportd")
    result = run("migrate", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("exportd: cannot connect to database exportd on 127.0.0.1:9")
    assert result.stderr.count("\n") == 1
    assert "hunter2" not in result.stderr


NO_DATABASE = (
    "exportd: configuration error: EXPORTD_DATABASE_URL: not set, and no embedded server "
    'in .exportd/pg: set it, or run "exportd up" first\n'
)
ANY_JOB = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    "command",
    [
        ["jobs", "ls"],
        ["jobs", "show", ANY_JOB],
        ["jobs", "cancel", ANY_JOB],
        ["cleanup"],
        ["cleanup", "--dry-run"],
        ["export", "orders"],
        ["migrate", "--status"],
        ["migrate", "--down", "0"],
        ["worker"],
        ["web"],
    ],
    ids=" ".join,
)
def test_commands_without_a_database_say_so_and_create_none(
    tmp_path: Path, command: list[str]
) -> None:
    """Run outside the checkout, without EXPORTD_DATABASE_URL: no embedded
    cluster appears in ./.exportd as a side effect, and no traceback."""
    result = run(*command, env=clean_env(EXPORTD_JWT_SECRET=SECRET), cwd=tmp_path)
    assert result.stderr == NO_DATABASE
    assert result.returncode == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [["jobs", "ls"], ["jobs", "show", ANY_JOB], ["cleanup"], ["export", "noop"]],
    ids=" ".join,
)
def test_an_unmigrated_database_is_one_line(
    empty_db_url: str, tmp_path: Path, command: list[str]
) -> None:
    env = clean_env(
        EXPORTD_DATABASE_URL=empty_db_url,
        EXPORTD_STORAGE_DIR=str(tmp_path / "packages"),
        EXPORTD_KINDS="tests.kinds_for_tests",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    result = run(*command, env=env, cwd=tmp_path)
    assert result.stderr == (
        "exportd: the database schema is not up to date; run `exportd migrate`\n"
    )
    assert result.returncode == 1


@pytest.mark.slow
def test_migrate_with_the_embedded_server_reuses_its_data(tmp_path: Path) -> None:
    """`exportd migrate`, the setup command, may create the embedded server
    (like `up`); `migrate --status` on an existing one does not re-create it."""
    env = clean_env(EXPORTD_DATA_DIR=str(tmp_path / "data"))
    first = run("migrate", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_jobs" in first.stdout
    pgdata = tmp_path / "data" / "pg"
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists()  # stopped on exit
    status_1 = run("migrate", "--status", env=env, cwd=tmp_path).stdout
    second = run("migrate", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    # same applied_at: the same data directory, not a re-initialised one
    assert run("migrate", "--status", env=env, cwd=tmp_path).stdout == status_1


def test_token_is_signed_with_the_configured_secret() -> None:
    env = clean_env(EXPORTD_JWT_SECRET=SECRET, EXPORTD_JWT_ISSUER="exportd-test")
    result = run("token", "--sub", "alice", "--admin", "--ttl", "120", env=env)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], issuer="exportd-test")
    assert claims["sub"] == "alice" and claims["role"] == "admin"
    assert claims["exp"] - claims["iat"] == 120
    plain = run("token", "--sub", "bob", env=env).stdout.strip()
    assert "role" not in jwt.decode(plain, SECRET, algorithms=["HS256"], issuer="exportd-test")


def test_token_without_a_secret_explains_itself(tmp_path: Path) -> None:
    result = run("token", "--sub", "alice", env=clean_env(EXPORTD_DATA_DIR=str(tmp_path)))
    assert result.returncode == 2
    assert "EXPORTD_JWT_SECRET: not set" in result.stderr
    assert result.stderr.count("\n") == 1


def test_token_rejects_a_non_positive_ttl() -> None:
    result = run("token", "--sub", "a", "--ttl", "0", env=clean_env(EXPORTD_JWT_SECRET=SECRET))
    assert result.returncode == 2 and "TTL" in result.stderr


@pytest.mark.slow
def test_up_starts_embedded_postgres_keeps_a_secret_and_stops_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = clean_env(EXPORTD_DATA_DIR=str(data), EXPORTD_PORT=str(port))
    log = (tmp_path / "up.log").open("w")
    with subprocess.Popen(
        [EXPORTD, "up"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    ) as proc:
        try:
            secret, token, banner = check_up_session(proc, data)
            # The printed curl commands, as a user pastes them.
            shell_env = {**env, "TOKEN": token}
            create_cmd, download_cmd = (
                line.strip() for line in banner if line.strip().startswith("curl ")
            )
            created = subprocess.run(
                ["bash", "-c", create_cmd],
                env=shell_env,
                capture_output=True,
                text=True,
                check=True,
            )
            job_id = json.loads(created.stdout)["data"]["job_id"]
            headers = {"Authorization": f"Bearer {token}"}
            job_url = f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}"
            deadline = time.monotonic() + 30
            while httpx.get(job_url, headers=headers).json()["data"]["status"] != "completed":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            downloads = tmp_path / "downloads"
            downloads.mkdir()
            subprocess.run(
                ["bash", "-c", download_cmd.replace("JOB_ID", job_id)],
                env=shell_env,
                cwd=downloads,
                capture_output=True,
                check=True,
            )
            (package,) = downloads.iterdir()
            assert package.name.startswith("export-orders-") and package.name.endswith(".tar.gz")
            with tarfile.open(package) as tar:
                assert sorted(n.split("/", 1)[1] for n in tar.getnames()) == [
                    "manifest.json",
                    "orders.csv",
                    "totals.csv",
                ]
            output = tmp_path / "orders.tar.gz"
            demo = run(
                "export",
                "orders",
                "--owner",
                "alice",
                "--wait",
                "--output",
                str(output),
                env=env,
                cwd=tmp_path,
            )
            assert demo.returncode == 0, demo.stderr
            with tarfile.open(output) as tar:
                names = [n.split("/", 1)[1] for n in tar.getnames()]
                assert names == ["orders.csv", "totals.csv", "manifest.json"]
                orders = tar.extractfile(tar.getmembers()[0])
                assert orders is not None
                assert len(orders.read().decode().splitlines()) == 2001  # header + rows
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            assert not (data / "pg" / "postmaster.pid").exists()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    # a second run reuses the secret
    second = run("token", "--sub", "x", env=env, cwd=tmp_path)
    assert jwt.decode(second.stdout.strip(), secret, algorithms=["HS256"])["sub"] == "x"


def check_up_session(proc: subprocess.Popen[str], data: Path) -> tuple[str, str, list[str]]:
    """Read `up`'s banner, check the token and the database it names; return the secret."""
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    output = "".join(lines)
    assert "applied 0002_views" in output, output
    token = next(line for line in lines if "a token for" in line).rsplit(" ", 1)[-1].strip()
    secret = (data / "jwt_secret").read_text().strip()
    assert (data / "jwt_secret").stat().st_mode & 0o777 == 0o600
    assert jwt.decode(token, secret, algorithms=["HS256"])["sub"]
    url = next(line for line in lines if "psql" in line).split("psql ", 1)[1].strip().strip("'")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM exportd.jobs").fetchone() == (0,)
    return secret, token, lines
