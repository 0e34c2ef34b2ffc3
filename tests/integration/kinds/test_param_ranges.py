"""The boundaries of param validation are PostgreSQL's own.

Every extreme value validation accepts runs in a real SQL export (bound into
a query that casts it to the column type it would meet); the first value
beyond each boundary is the one the server refuses, so a job given it would
burn its attempts — which is why validation refuses it before any job
exists."""

from __future__ import annotations

import csv
import gzip
import io
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import ParamError
from daemon.kinds.context import ExportContext, JobInfo
from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.params import INT_PARAM_MAX, INT_PARAM_MIN
from daemon.kinds.registry import Kind
from daemon.kinds.sql import SqlExportError
from daemon.models import JobStatus
from daemon.worker.pipeline import run_steps

pytestmark = pytest.mark.anyio

EXPORTS = """
[exports.ranges.params]
n = { type = "int", default = 0 }
f = { type = "float", default = 0.0 }
t = { type = "timestamp", default = "2024-01-01T00:00:00Z" }
d = { type = "date", default = "2024-01-01" }

[[exports.ranges.queries]]
name = "values"
sql = '''
SELECT %(n)s::bigint AS n, %(n)s AS bare_n, %(f)s::float8 AS f,
       %(t)s::timestamptz AT TIME ZONE 'UTC' AS t, %(d)s::date AS d
 WHERE %(owner_id)s IS NOT NULL
'''
"""


async def progress_sink(
    job_id: uuid.UUID, done: int, total: int, current_step: str | None, percentage: int
) -> JobStatus | None:
    return JobStatus.IN_PROGRESS


def ranges_kind(tmp_path: Path, db_url: str) -> Kind:
    path = tmp_path / "exports.toml"
    path.write_text(EXPORTS)
    (kind,) = load_exports_file(path, default_database_url=db_url)
    return kind


async def export(
    tmp_path: Path, kind: Kind, params: dict[str, Any], *, validate: bool = True
) -> dict[str, str]:
    """Run the export with `params` (validated like a request, unless told not to)."""
    stored = kind.validate_params(params) if validate else {**kind.validate_params({}), **params}
    job = JobInfo(uuid.uuid4(), kind.name, "alice", stored, 1, 1, datetime.now(UTC))
    work_dir = tmp_path / f"work-{job.job_id}"
    ctx = ExportContext(job, kind, work_dir, progress_sink, progress_interval=0)
    await run_steps(kind, ctx)
    (member,) = ctx.files  # the SQL step keeps its output as a gzip member
    assert member.arcname == "values.csv" and member.compressed
    (row,) = csv.DictReader(io.StringIO(gzip.decompress(member.source.read_bytes()).decode()))
    return row


@pytest.mark.parametrize("n", [INT_PARAM_MIN, INT_PARAM_MAX, -1])
async def test_int_boundaries_run(tmp_path: Path, db_url: str, n: int) -> None:
    row = await export(tmp_path, ranges_kind(tmp_path, db_url), {"n": n})
    assert (row["n"], row["bare_n"]) == (str(n), str(n))


async def test_the_lowest_bigint_is_refused_by_the_server(tmp_path: Path, db_url: str) -> None:
    kind = ranges_kind(tmp_path, db_url)
    with pytest.raises(ParamError):
        kind.validate_params({"n": INT_PARAM_MIN - 1})
    with pytest.raises(SqlExportError, match="bigint out of range"):
        await export(tmp_path, kind, {"n": INT_PARAM_MIN - 1}, validate=False)


@pytest.mark.parametrize("f", [1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 2**63])
async def test_float_boundaries_run(tmp_path: Path, db_url: str, f: float) -> None:
    row = await export(tmp_path, ranges_kind(tmp_path, db_url), {"f": f})
    assert float(row["f"]) == float(f)


@pytest.mark.parametrize(
    ("t", "utc"),
    [
        ("2024-01-01T00:00:00+15:59:59", "2023-12-31 08:00:01"),
        ("2024-01-01T00:00:00-15:59:59", "2024-01-01 15:59:59"),
        ("0001-01-01T00:00:00-15:59", "0001-01-01 15:59:00"),
        ("0001-01-01T00:00:00+15:59", "0001-12-31 08:01:00 BC"),
        ("9999-12-31T23:59:59.999999-15:59", "10000-01-01 15:58:59.999999"),
    ],
)
async def test_timestamp_boundaries_run(tmp_path: Path, db_url: str, t: str, utc: str) -> None:
    row = await export(tmp_path, ranges_kind(tmp_path, db_url), {"t": t})
    assert row["t"] == utc


@pytest.mark.parametrize(
    "t",
    ["2024-01-01T00:00:00-23:59", "2024-01-01T00:00:00+16:00", "2024-01-01T00:00:00+05:30:00.5"],
)
async def test_offsets_beyond_are_refused_by_the_server(
    tmp_path: Path, db_url: str, t: str
) -> None:
    kind = ranges_kind(tmp_path, db_url)
    with pytest.raises(ParamError):
        kind.validate_params({"t": t})
    with pytest.raises(SqlExportError, match=r"SQLSTATE 2200[79]"):
        await export(tmp_path, kind, {"t": t}, validate=False)


@pytest.mark.parametrize("d", ["0001-01-01", "9999-12-31"])
async def test_date_boundaries_run(tmp_path: Path, db_url: str, d: str) -> None:
    row = await export(tmp_path, ranges_kind(tmp_path, db_url), {"d": d})
    assert row["d"] == d
