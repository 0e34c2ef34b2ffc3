"""`exportd jobs …` and `exportd kinds ls` in an 80-column terminal: ids
printed whole, any unique prefix accepted, the kinds as the API lists them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from tests.e2e.processes import EXPORTD, create, status_of, worker_env
from tests.helpers import kinds_registry

pytestmark = pytest.mark.slow

# Two ids sharing their first 8 hex digits, as `ls` used to cut them.
TWINS = ("05132f10-0000-4000-8000-000000000001", "05132f10-0000-4000-8000-000000000002")


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = worker_env(db_url, Path("/nonexistent"), COLUMNS="80")
    return subprocess.run(
        [EXPORTD, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def set_id(db_url: str, job_id: UUID, new_id: str) -> UUID:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE exportd.jobs SET job_id = %s WHERE job_id = %s", (new_id, job_id))
    return UUID(new_id)


def test_ls_prints_whole_ids_at_80_columns(db_url: str) -> None:
    jobs = [create(db_url, "noop") for _ in range(2)]
    listing = cli(db_url, "jobs", "ls")
    assert listing.returncode == 0, listing.stderr
    assert max(len(line) for line in listing.stdout.splitlines()) <= 80
    for job in jobs:
        assert str(job) in listing.stdout, listing.stdout


def test_show_retry_cancel_take_a_unique_prefix(db_url: str) -> None:
    job = create(db_url, "noop")
    prefix = str(job)[:8]
    shown = cli(db_url, "jobs", "show", prefix)
    assert shown.returncode == 0, shown.stderr
    assert str(job) in shown.stdout and "pending" in shown.stdout
    cancelled = cli(db_url, "jobs", "cancel", prefix.upper())
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job} is cancelled" in cancelled.stdout
    retried = cli(db_url, "jobs", "retry", str(job)[:13])  # with its dash
    assert retried.returncode == 0, retried.stderr
    assert f"job {job}: run 2 is pending" in retried.stdout
    assert status_of(db_url, job) == ("pending", 0)


def test_an_ambiguous_prefix_is_one_line_and_changes_nothing(db_url: str) -> None:
    first = set_id(db_url, create(db_url, "noop"), TWINS[0])
    second = set_id(db_url, create(db_url, "noop"), TWINS[1])
    for action in ("show", "retry", "cancel"):
        result = cli(db_url, "jobs", action, "05132f10")
        assert result.returncode == 1, (action, result.stdout)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "ambiguous" in result.stderr and TWINS[0] in result.stderr
    assert status_of(db_url, first)[0] == status_of(db_url, second)[0] == "pending"
    # One more digit tells them apart.
    shown = cli(db_url, "jobs", "show", TWINS[1][:-1] + "2")
    assert shown.returncode == 0 and TWINS[1] in shown.stdout


def test_an_unknown_or_too_short_prefix(db_url: str) -> None:
    create(db_url, "noop")
    missing = cli(db_url, "jobs", "show", "ffffffff-ffff")
    assert missing.returncode == 1 and "no job ffffffff-ffff" in missing.stderr
    for bad in ("abc", "xyz12345", "-"):
        result = cli(db_url, "jobs", "show", bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert "is not a job id" in result.stderr


def test_kinds_ls_table_and_json(db_url: str) -> None:
    table = cli(db_url, "kinds", "ls")
    assert table.returncode == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    for name in ("noop", "typed", "three-steps", "flaky"):
        assert name in table.stdout
    assert "text: text, required" in table.stdout
    as_json = cli(db_url, "kinds", "ls", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"data": kinds_registry().describe()}


def test_show_says_which_step_each_attempt_started_at(db_url: str) -> None:
    """An attempt that resumed its run (DESIGN §14) shows the step it started at."""
    job = create(db_url, "noop")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO exportd.job_attempts"
            " (job_id, run, attempt, finished_at, outcome, error, resumed_from_step)"
            " VALUES (%(j)s, 1, 1, now(), 'failed', 'boom', NULL),"
            "        (%(j)s, 1, 2, now(), 'failed', 'boom', 3)",
            {"j": job},
        )
    env = worker_env(db_url, Path("/nonexistent"), COLUMNS="200")
    shown = subprocess.run(
        [EXPORTD, "jobs", "show", str(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    header = next(line for line in lines if "from step" in line)
    columns = [cell.strip() for cell in re.split("[│┃]", header)]
    rows = [[cell.strip() for cell in line.split("│")] for line in lines if "boom" in line]
    started_at = {row[columns.index("attempt")]: row[columns.index("from step")] for row in rows}
    assert started_at == {"1": "1", "2": "3"}, shown.stdout
