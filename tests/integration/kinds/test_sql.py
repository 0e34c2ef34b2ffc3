"""daemon.kinds.sql against a real database: exact CSV and JSON Lines output,
owner isolation, bound params, read-only transactions, statement timeouts
and cancellation that reaches the server."""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from daemon.errors import ParamError
from daemon.kinds.context import ExportContext, JobCancelled, JobInfo, PackageFile
from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import Kind
from daemon.kinds.sql import SqlExportError
from daemon.models import JobStatus
from daemon.worker.pipeline import run_steps

pytestmark = pytest.mark.anyio

AConn = psycopg.AsyncConnection[Any]

TRICKY = [
    "back\\slash \\n \\\\ end\\",
    "double \" quote, and 'single'",
    "new\nline\r\nand tab\t",
    "ünïcødé ✓ 🎉 中文",
    "control \x01\x02\x1f chars",
    "",
    '{"looks": "like json"}',
]


class RecordingSink:
    """The progress sink of a running job: records each write, keeps it running."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, str | None, int]] = []

    async def __call__(
        self, job_id: uuid.UUID, done: int, total: int, current_step: str | None, percentage: int
    ) -> JobStatus | None:
        self.calls.append((done, total, current_step, percentage))
        return JobStatus.IN_PROGRESS


def load_kind(tmp_path: Path, db_url: str, text: str) -> Kind:
    path = tmp_path / "exports.toml"
    path.write_text(text)
    (kind,) = load_exports_file(path, default_database_url=db_url)
    return kind


def make_ctx(
    tmp_path: Path,
    kind: Kind,
    *,
    owner: str | None = "alice",
    params: dict[str, Any] | None = None,
    validate: bool = True,
    sink: RecordingSink | None = None,
) -> ExportContext:
    job = JobInfo(
        job_id=uuid.uuid4(),
        kind=kind.name,
        owner_id=owner,
        params=kind.validate_params(params) if validate else dict(params or {}),
        run=1,
        attempt=1,
        created_at=datetime.now(UTC),
    )
    return ExportContext(
        job=job,
        kind=kind,
        work_dir=tmp_path / "work",
        sink=sink or RecordingSink(),
        progress_interval=0,
    )


@pytest.fixture
async def shop(aconn: AConn) -> AConn:
    """`shop.orders` with rows of two owners."""
    await aconn.execute(
        """
        CREATE SCHEMA shop;
        CREATE TABLE shop.orders (
            id int PRIMARY KEY,
            owner_id text NOT NULL,
            status text NOT NULL,
            total numeric(10, 2) NOT NULL,
            created_at date NOT NULL,
            note text
        )
        """
    )
    rows = [
        (1, "alice", "paid", Decimal("10.50"), date(2024, 1, 10), "first"),
        (2, "bob", "paid", Decimal("99.00"), date(2024, 1, 11), "bob's"),
        (3, "alice", "open", Decimal("7.25"), date(2024, 2, 15), None),
        (4, "alice", "paid", Decimal("1.00"), date(2024, 3, 1), "last, with comma"),
        (5, "bob", "open", Decimal("5.00"), date(2024, 3, 2), "bob again"),
    ]
    async with aconn.cursor() as cur:
        await cur.executemany("INSERT INTO shop.orders VALUES (%s, %s, %s, %s, %s, %s)", rows)
    return aconn


ORDERS = """
[exports.orders]
format = "{format}"

[exports.orders.params]
since = {{ type = "date", default = "1970-01-01" }}
status = {{ type = "text" }}

[[exports.orders.queries]]
name = "orders"
sql = '''
SELECT id, status, total, created_at, note FROM shop.orders
WHERE owner_id = %(owner_id)s AND created_at >= %(since)s
  AND (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY id
'''
"""


def orders_kind(tmp_path: Path, db_url: str, fmt: str = "csv") -> Kind:
    return load_kind(tmp_path, db_url, ORDERS.format(format=fmt))


async def run_kind(kind: Kind, ctx: ExportContext) -> dict[str, str]:
    """Run every step; return the package members' contents by name."""
    await run_steps(kind, ctx)
    return {f.arcname: content(f) for f in ctx.files}


def content(member: PackageFile) -> str:
    """The text a package member will hold (the SQL step keeps it gzip-compressed)."""
    data = member.source.read_bytes()
    if member.compressed:
        data = gzip.decompress(data)
        assert len(data) == member.size
        assert hashlib.sha256(data).hexdigest() == member.sha256
    return data.decode("utf-8")


def member_text(ctx: ExportContext, arcname: str) -> str:
    (member,) = [f for f in ctx.files if f.arcname == arcname]
    return content(member)


async def test_csv_has_a_header_and_only_the_owners_rows(
    tmp_path: Path, db_url: str, shop: AConn
) -> None:
    kind = orders_kind(tmp_path, db_url)
    ctx = make_ctx(tmp_path, kind)
    files = await run_kind(kind, ctx)
    assert files == {
        "orders.csv": (
            "id,status,total,created_at,note\n"
            "1,paid,10.50,2024-01-10,first\n"
            "3,open,7.25,2024-02-15,\n"
            '4,paid,1.00,2024-03-01,"last, with comma"\n'
        )
    }
    assert ctx.result["rows"] == {"orders": 3}
    assert [(f.arcname, f.rows) for f in ctx.files] == [("orders.csv", 3)]


async def test_the_sql_always_gets_the_jobs_owner(tmp_path: Path, db_url: str, shop: AConn) -> None:
    kind = orders_kind(tmp_path, db_url)
    with pytest.raises(ParamError, match="owner_id"):
        kind.validate_params({"owner_id": "bob"})
    # Even params that skipped validation cannot replace the owner.
    params = {**kind.validate_params({}), "owner_id": "bob"}
    ctx = make_ctx(tmp_path, kind, params=params, validate=False)
    files = await run_kind(kind, ctx)
    assert [line.split(",")[0] for line in files["orders.csv"].splitlines()] == [
        "id",
        "1",
        "3",
        "4",
    ]

    # ...nor can a step's converted params.
    tampered = make_ctx(tmp_path / "tampered", kind)
    tampered.params["owner_id"] = "bob"
    files = await run_kind(kind, tampered)
    assert [line.split(",")[0] for line in files["orders.csv"].splitlines()] == [
        "id",
        "1",
        "3",
        "4",
    ]

    bob = make_ctx(tmp_path / "bob", kind, owner="bob")
    files = await run_kind(kind, bob)
    assert [line.split(",")[0] for line in files["orders.csv"].splitlines()] == ["id", "2", "5"]

    nobody = make_ctx(tmp_path / "nobody", kind, owner=None)
    assert await run_kind(kind, nobody) == {"orders.csv": "id,status,total,created_at,note\n"}


async def test_an_injection_attempt_is_data(tmp_path: Path, db_url: str, shop: AConn) -> None:
    kind = orders_kind(tmp_path, db_url)
    ctx = make_ctx(tmp_path, kind, params={"status": "x' OR '1'='1"})
    await run_kind(kind, ctx)
    assert ctx.result["rows"] == {"orders": 0}

    ctx = make_ctx(tmp_path / "paid", kind, params={"status": "paid"})
    files = await run_kind(kind, ctx)
    assert [line.split(",")[0] for line in files["orders.csv"].splitlines()] == ["id", "1", "4"]


async def test_a_date_param_is_bound(tmp_path: Path, db_url: str, shop: AConn) -> None:
    kind = orders_kind(tmp_path, db_url)
    ctx = make_ctx(tmp_path, kind, params={"since": "2024-02-15"})
    files = await run_kind(kind, ctx)
    assert [line.split(",")[0] for line in files["orders.csv"].splitlines()] == ["id", "3", "4"]


async def insert_tricky(conn: AConn) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO shop.orders VALUES (%s, 'carol', 'paid', 1, '2024-01-01', %s)",
            [(100 + i, text) for i, text in enumerate(TRICKY)],
        )


async def test_jsonl_round_trips_tricky_values(tmp_path: Path, db_url: str, shop: AConn) -> None:
    await insert_tricky(shop)
    kind = load_kind(
        tmp_path,
        db_url,
        """
[exports.notes]
format = "jsonl"
[[exports.notes.queries]]
name = "notes"
sql = '''
SELECT id, note, id * 2 AS t, jsonb_build_object('note', note) AS doc, created_at
FROM shop.orders WHERE owner_id = %(owner_id)s ORDER BY id
'''
""",
    )
    ctx = make_ctx(tmp_path, kind, owner="carol")
    files = await run_kind(kind, ctx)
    text = files["notes.jsonl"]
    assert text.endswith("\n")
    lines = text.splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "id": 100 + i,
            "note": note,
            "t": 2 * (100 + i),
            "doc": {"note": note},
            "created_at": "2024-01-01",
        }
        for i, note in enumerate(TRICKY)
    ]
    assert ctx.result["rows"] == {"notes": len(TRICKY)} == {"notes": len(lines)}


async def test_csv_round_trips_tricky_values(tmp_path: Path, db_url: str, shop: AConn) -> None:
    await insert_tricky(shop)
    kind = load_kind(
        tmp_path,
        db_url,
        """
[[exports.notes.queries]]
name = "notes"
sql = "SELECT id, note FROM shop.orders WHERE owner_id = %(owner_id)s ORDER BY id"
""",
    )
    ctx = make_ctx(tmp_path, kind, owner="carol")
    await run_steps(kind, ctx)
    rows = list(csv.reader(io.StringIO(member_text(ctx, "notes.csv"), newline="")))
    assert rows == [["id", "note"]] + [[str(100 + i), note] for i, note in enumerate(TRICKY)]
    assert ctx.result["rows"] == {"notes": len(TRICKY)}


async def test_each_query_is_a_step_and_a_file(tmp_path: Path, db_url: str, shop: AConn) -> None:
    kind = load_kind(
        tmp_path,
        db_url,
        """
[[exports.two.queries]]
name = "paid"
sql = "SELECT id FROM shop.orders WHERE owner_id = %(owner_id)s AND status = 'paid' ORDER BY id"
[[exports.two.queries]]
name = "count"
sql = "SELECT count(*) AS n FROM shop.orders WHERE owner_id = %(owner_id)s"
""",
    )
    ctx = make_ctx(tmp_path, kind)
    assert await run_kind(kind, ctx) == {"paid.csv": "id\n1\n4\n", "count.csv": "n\n3\n"}
    assert ctx.result["rows"] == {"paid": 2, "count": 1}


async def test_progress_is_reported_for_large_results(tmp_path: Path, db_url: str) -> None:
    kind = load_kind(
        tmp_path,
        db_url,
        """
[[exports.big.queries]]
name = "big"
sql = "SELECT i, repeat('x', 100) AS pad FROM generate_series(1, 20000) AS i"
""",
    )
    recording = RecordingSink()
    ctx = make_ctx(tmp_path, kind, sink=recording)
    await run_steps(kind, ctx)
    assert ctx.result["rows"] == {"big": 20000}
    text = member_text(ctx, "big.csv")
    assert text.count("\n") == 20001
    sink = recording
    assert isinstance(sink, RecordingSink)
    assert any(step and "written" in step for _, _, step, _ in sink.calls)


async def test_the_transaction_is_read_only(tmp_path: Path, db_url: str, shop: AConn) -> None:
    kind = load_kind(
        tmp_path,
        db_url,
        """
[[exports.sneaky.queries]]
name = "sneaky"
sql = '''
INSERT INTO shop.orders VALUES (99, %(owner_id)s, 'paid', 0, '2024-01-01', 'planted')
RETURNING id
'''
""",
    )
    ctx = make_ctx(tmp_path, kind)
    with pytest.raises(SqlExportError, match="read-only transaction") as caught:
        await run_steps(kind, ctx)
    assert "\n" not in str(caught.value)
    cur = await shop.execute("SELECT count(*) FROM shop.orders WHERE id = 99")
    assert await cur.fetchone() == (0,)


async def test_the_statement_timeout_is_enforced(tmp_path: Path, db_url: str) -> None:
    kind = load_kind(
        tmp_path,
        db_url,
        """
[exports.slow]
statement_timeout = "200ms"
[[exports.slow.queries]]
name = "slow"
sql = "SELECT pg_sleep(10)"
""",
    )
    ctx = make_ctx(tmp_path, kind)
    started = time.monotonic()
    with pytest.raises(SqlExportError, match="statement timeout"):
        await run_steps(kind, ctx)
    assert time.monotonic() - started < 5


async def test_errors_never_show_the_connection_string(tmp_path: Path, db_url: str) -> None:
    kind = load_kind(
        tmp_path,
        db_url,
        """
[exports.elsewhere]
database_url = "postgresql://reader:hunter2secret@127.0.0.1:1/shop?connect_timeout=2"
[[exports.elsewhere.queries]]
name = "q"
sql = "SELECT 1"
""",
    )
    ctx = make_ctx(tmp_path, kind)
    with pytest.raises(SqlExportError, match="cannot connect") as caught:
        await run_steps(kind, ctx)
    assert "hunter2secret" not in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)


async def test_sql_errors_are_one_line(tmp_path: Path, db_url: str) -> None:
    kind = load_kind(
        tmp_path,
        db_url,
        """
[[exports.broken.queries]]
name = "q"
sql = "SELECT * FROM shop.nowhere WHERE owner_id = %(owner_id)s"
""",
    )
    ctx = make_ctx(tmp_path, kind)
    with pytest.raises(SqlExportError) as caught:
        await run_steps(kind, ctx)
    assert str(caught.value) == (
        "query 'q' failed: relation \"shop.nowhere\" does not exist (SQLSTATE 42P01)"
    )


@pytest.mark.parametrize("estimate", ["estimate = 'planner'", "count_sql = '{count}'"])
async def test_an_estimate_runs_with_the_same_params(
    tmp_path: Path, db_url: str, shop: AConn, estimate: str
) -> None:
    count = "SELECT count(*) FROM shop.orders WHERE owner_id = %(owner_id)s"
    kind = load_kind(
        tmp_path,
        db_url,
        f"""
[[exports.counted.queries]]
name = "q"
sql = "SELECT id FROM shop.orders WHERE owner_id = %(owner_id)s ORDER BY id"
{estimate.format(count=count)}
""",
    )
    ctx = make_ctx(tmp_path, kind)
    assert await run_kind(kind, ctx) == {"q.csv": "id\n1\n3\n4\n"}


async def test_a_failing_count_sql_fails_the_step_in_one_line(tmp_path: Path, db_url: str) -> None:
    kind = load_kind(
        tmp_path,
        db_url,
        """
[[exports.counted.queries]]
name = "q"
sql = "SELECT 1 AS one WHERE %(owner_id)s IS NOT NULL"
count_sql = "SELECT count(*) FROM shop.nowhere WHERE owner_id = %(owner_id)s"
""",
    )
    ctx = make_ctx(tmp_path, kind)
    with pytest.raises(SqlExportError) as caught:
        await run_steps(kind, ctx)
    assert str(caught.value) == (
        "query 'q' failed: relation \"shop.nowhere\" does not exist (SQLSTATE 42P01)"
    )
    assert caught.value.permanent


async def test_the_output_is_compressed_at_the_configured_level(
    tmp_path: Path, db_url: str
) -> None:
    kind = load_kind(
        tmp_path,
        db_url,
        """
[[exports.big.queries]]
name = "big"
sql = "SELECT i, i %% 977 AS label FROM generate_series(1, 100000) AS i"
""",
    )
    sizes = {}
    for level in (0, 3):
        ctx = make_ctx(tmp_path / str(level), kind)
        ctx.compression_level = level
        await run_steps(kind, ctx)
        (member,) = ctx.files
        assert member.compressed and member.rows == 100_000
        sizes[level] = member.source.stat().st_size
        assert member.size is not None and sizes[level] < member.size
    assert sizes[0] > sizes[3] * 1.1, sizes


SLEEP = """
[[exports.sleepy.queries]]
name = "sleepy"
sql = "SELECT pg_sleep(30) WHERE %(owner_id)s IS NOT NULL"
"""


async def sleeping_backends(conn: AConn) -> int:
    cur = await conn.execute(
        """
        SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND query LIKE 'COPY (SELECT pg_sleep(30)%%'
        """
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def wait_for_backends(conn: AConn, expected: int, within: float = 5.0) -> None:
    """Poll pg_stat_activity until `expected` sleeping queries are seen."""
    deadline = time.monotonic() + within
    while (seen := await sleeping_backends(conn)) != expected:
        assert time.monotonic() < deadline, f"{seen} sleeping queries, expected {expected}"
        await asyncio.sleep(0.05)


async def test_cancelling_the_job_cancels_the_query(
    tmp_path: Path, db_url: str, aconn: AConn
) -> None:
    kind = load_kind(tmp_path, db_url, SLEEP)
    ctx = make_ctx(tmp_path, kind)
    task = asyncio.create_task(run_steps(kind, ctx))
    await wait_for_backends(aconn, 1)
    ctx.cancel()
    with anyio.fail_after(5), pytest.raises(JobCancelled):
        await task
    await wait_for_backends(aconn, 0)


async def test_cancelling_the_task_cancels_the_query(
    tmp_path: Path, db_url: str, aconn: AConn
) -> None:
    kind = load_kind(tmp_path, db_url, SLEEP)
    ctx = make_ctx(tmp_path, kind)
    task = asyncio.create_task(run_steps(kind, ctx))
    await wait_for_backends(aconn, 1)
    task.cancel()
    with anyio.fail_after(5), pytest.raises(asyncio.CancelledError):
        await task
    await wait_for_backends(aconn, 0)


async def test_a_job_cancelled_before_the_step_starts_runs_nothing(
    tmp_path: Path, db_url: str
) -> None:
    kind = load_kind(tmp_path, db_url, SLEEP)
    ctx = make_ctx(tmp_path, kind)
    ctx.cancel()
    with anyio.fail_after(5), pytest.raises(JobCancelled):
        await kind.steps[0].run(ctx)
    assert ctx.files == []
