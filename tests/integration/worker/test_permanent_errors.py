"""Errors no retry can fix end the job on the first attempt (DESIGN §16);
transient ones are still retried, and every retry logs its reason.

The worker runs in this process against a real database. The retry backoff
is set to a minute: a job that were retried would not end within the test's
deadline, so "one attempt, final status" is also "quickly"."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import Kind, KindRegistry
from daemon.models import JobStatus
from tests.helpers import attempt_rows, create, fast_settings, kinds_registry, running_worker
from tests.helpers import wait_for as wait_for_job

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]

SLOW_RETRY = {"retry_base_seconds": 60.0, "retry_max_seconds": 60.0}
QUICK = 15.0  # seconds: far less than one retry's backoff


def sql_registry(tmp_path: Path, db_url: str, toml: str) -> KindRegistry:
    path = tmp_path / "exports.toml"
    path.write_text(toml)
    registry = kinds_registry()
    for kind in load_exports_file(path, default_database_url=db_url):
        registry.register(kind)
    return registry


def one_query(name: str, sql: str, *, params: str = "", database_url: str = "") -> str:
    url = f'database_url = "{database_url}"\n' if database_url else ""
    declared = f"[exports.{name}.params]\n{params}\n" if params else ""
    return (
        f"[exports.{name}]\n{url}{declared}"
        f"[[exports.{name}.queries]]\nname = \"q\"\nsql = '''{sql}'''\n"
    )


@pytest.fixture
async def shop(aconn: AConn) -> AConn:
    await aconn.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.orders (id int, owner_id text);"
        "INSERT INTO shop.orders VALUES (1, 'alice')"
    )
    return aconn


async def fails_at_once(
    aconn: AConn,
    db_url: str,
    tmp_path: Path,
    registry: KindRegistry,
    kind: str,
    params: dict[str, Any] | None = None,
) -> str:
    """Run `kind` with three attempts allowed; check it ended after one; return the error."""
    settings = fast_settings(tmp_path, **SLOW_RETRY)
    async with running_worker(settings, db_url, registry):
        job = await create(aconn, kind, params, registry=registry, max_attempts=3)
        done = await wait_for_job(aconn, job.job_id, timeout=QUICK)
    assert done.status is JobStatus.ROLLED_BACK
    assert done.attempts == 1
    assert done.completed_at is not None and done.package_path is None
    rows = await attempt_rows(aconn, job.job_id)
    assert [r[:3] for r in rows] == [(1, 1, "failed")]
    assert done.error_message is not None and rows[0][3] == done.error_message
    return done.error_message


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        (
            "SELEC id FROM shop.orders WHERE owner_id = %(owner_id)s",
            'syntax error at or near "SELEC" (SQLSTATE 42601)',
        ),
        (
            "SELECT id FROM shop.nowhere WHERE owner_id = %(owner_id)s",
            'relation "shop.nowhere" does not exist (SQLSTATE 42P01)',
        ),
        (
            "SELECT no_such_column FROM shop.orders WHERE owner_id = %(owner_id)s",
            'column "no_such_column" does not exist (SQLSTATE 42703)',
        ),
        (
            # a bound value the server rejects: integer out of range (class 22)
            "SELECT id FROM shop.orders WHERE owner_id = %(owner_id)s AND id = %(n)s::int",
            "integer out of range (SQLSTATE 22003)",
        ),
    ],
    ids=["syntax-error", "undefined-table", "undefined-column", "rejected-value"],
)
async def test_a_broken_query_fails_the_job_at_once(
    aconn: AConn, db_url: str, tmp_path: Path, shop: AConn, sql: str, reason: str
) -> None:
    registry = sql_registry(
        tmp_path, db_url, one_query("broken", sql, params='n = { type = "int" }')
    )
    params = {"n": 2**40} if "%(n)s" in sql else {}
    error = await fails_at_once(aconn, db_url, tmp_path, registry, "broken", params)
    assert error == f"SqlExportError: query 'q' failed: {reason}"


async def test_permission_denied_fails_the_job_at_once(
    aconn: AConn, db_url: str, tmp_path: Path, shop: AConn
) -> None:
    role = f"exportd_noaccess_{uuid.uuid4().hex[:8]}"
    await aconn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'noaccess'")
    try:
        url = make_conninfo(db_url, user=role, password="noaccess")
        registry = sql_registry(
            tmp_path,
            db_url,
            one_query(
                "forbidden",
                "SELECT id FROM shop.orders WHERE owner_id = %(owner_id)s",
                database_url=url,
            ),
        )
        error = await fails_at_once(aconn, db_url, tmp_path, registry, "forbidden")
    finally:
        await aconn.execute(f"DROP ROLE {role}")
    assert error == (
        "SqlExportError: query 'q' failed: permission denied for schema shop (SQLSTATE 42501)"
    )


async def test_a_kind_unknown_to_the_worker_fails_the_job_at_once(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """The API knew the kind; the worker (another version, another exports file) does not."""
    api_registry = kinds_registry()
    api_registry.register(_vanished())
    settings = fast_settings(tmp_path, **SLOW_RETRY)
    async with running_worker(settings, db_url, kinds_registry()):
        job = await create(aconn, "vanished", registry=api_registry, max_attempts=3)
        done = await wait_for_job(aconn, job.job_id, timeout=QUICK)
    assert done.status is JobStatus.ROLLED_BACK and done.attempts == 1
    assert done.error_message is not None
    assert done.error_message.startswith("UnknownKind: unknown kind 'vanished'")
    assert [r[:3] for r in await attempt_rows(aconn, job.job_id)] == [(1, 1, "failed")]


def _vanished() -> Kind:
    kind = Kind("vanished")

    @kind.step("Never runs")
    async def never(ctx: object) -> None:
        raise AssertionError("the worker does not know this kind")

    return kind


async def test_a_statement_timeout_is_still_retried(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """57014 (statement timeout) may pass next time: retried up to max_attempts."""
    registry = sql_registry(
        tmp_path,
        db_url,
        '[exports.sleepy]\nstatement_timeout = "100ms"\n'
        '[[exports.sleepy.queries]]\nname = "q"\n'
        'sql = "SELECT pg_sleep(5) WHERE %(owner_id)s IS NOT NULL"\n',
    )
    async with running_worker(fast_settings(tmp_path), db_url, registry):
        job = await create(aconn, "sleepy", registry=registry, max_attempts=2)
        done = await wait_for_job(aconn, job.job_id)
    assert done.status is JobStatus.ROLLED_BACK and done.attempts == 2
    assert done.error_message is not None and "57014" in done.error_message
    assert [r[2] for r in await attempt_rows(aconn, job.job_id)] == ["failed", "failed"]


async def test_a_transient_failure_is_retried_and_each_retry_says_why(
    aconn: AConn, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="daemon.worker.settle")
    async with running_worker(fast_settings(tmp_path), db_url):
        job = await create(aconn, "flaky", {"fail_times": 2}, max_attempts=3)
        done = await wait_for_job(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED and done.attempts == 3
    retries = [
        r.getMessage()
        for r in caplog.records
        if r.name == "daemon.worker.settle" and getattr(r, "action", None) == "retry"
    ]
    assert len(retries) == 2
    assert retries[0].endswith(": RuntimeError: planned failure 1")
    assert retries[1].endswith(": RuntimeError: planned failure 2")
    assert all(r.startswith("retry in ") for r in retries)
