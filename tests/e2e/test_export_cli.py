"""`exportd export … --wait --output` and `exportd jobs …` against a real worker."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from tests.e2e.processes import EXPORTD, create, status_of, wait_status, worker, worker_env

pytestmark = pytest.mark.slow


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXPORTD, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_export_wait_writes_the_package(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path / "packages", COLUMNS="120")
    output = tmp_path / "out.tar.gz"
    with worker(env, tmp_path, "a"):
        result = cli(
            env, "export", "three-steps", "--param", "pause=0.3", "--wait", "--output", str(output)
        )
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout and f"wrote {output}" in result.stdout
    job_id = UUID(result.stdout.split()[2])
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT package_sha256, owner_id FROM exportd.jobs WHERE job_id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    assert hashlib.sha256(output.read_bytes()).hexdigest() == row[0]
    with tarfile.open(output) as tar:
        assert any(name.endswith("/third.txt") for name in tar.getnames())


def test_export_wait_fails_with_the_error(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path / "packages")
    with worker(env, tmp_path, "a"):
        result = cli(
            env, "export", "flaky", "--param", "fail_times=9", "--max-attempts", "1", "--wait"
        )
    assert result.returncode == 1
    assert "rolled_back: RuntimeError: planned failure 1" in result.stderr


def test_export_with_a_bad_param_creates_nothing(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path / "packages")
    result = cli(env, "export", "flaky", "--param", "fail_times=lots")
    assert result.returncode == 1
    assert result.stderr.strip() == "exportd: params.fail_times: must be an integer"
    unknown = cli(env, "export", "nope")
    assert unknown.returncode == 1 and "unknown kind 'nope'" in unknown.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM exportd.jobs").fetchone() == (0,)


def test_jobs_ls_show_cancel_retry(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path / "packages", COLUMNS="200")
    job = create(db_url, "noop")
    listing = cli(env, "jobs", "ls")
    assert listing.returncode == 0 and str(job) in listing.stdout and "pending" in listing.stdout
    cancelled = cli(env, "jobs", "cancel", str(job))
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = cli(env, "jobs", "cancel", str(job))
    assert again.returncode == 1 and "already finished" in again.stderr
    retried = cli(env, "jobs", "retry", str(job))
    assert retried.returncode == 0 and "run 2 is pending" in retried.stdout
    with worker(env, tmp_path, "a"):
        wait_status(db_url, job, "completed")
    shown = cli(env, "jobs", "show", str(job))
    assert shown.returncode == 0
    assert "completed" in shown.stdout and "succeeded" in shown.stdout
    not_again = cli(env, "jobs", "retry", str(job))
    assert not_again.returncode == 1 and "package still exists" in not_again.stderr
    missing = cli(env, "jobs", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no job" in missing.stderr
    assert status_of(db_url, job) == ("completed", 1)
