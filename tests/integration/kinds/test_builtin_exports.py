"""Built-in kinds from an exports file, run by the worker end to end: the
package holds only the owner's rows, params are bound as data, and bad params
are refused before any job exists."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.actions import ExportRequest, create_export
from daemon.errors import ParamError
from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import KindRegistry
from daemon.models import JobStatus
from daemon.storage.local import LocalStorage
from tests.helpers import fast_settings, running_worker, wait_for

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]

EXPORTS = """
[exports.orders]
title = "My orders"
statement_timeout = "30s"

[exports.orders.params]
since = { type = "date", default = "1970-01-01" }
status = { type = "text" }

[[exports.orders.queries]]
name = "orders"
sql = '''
SELECT id, total, status FROM shop.orders
WHERE owner_id = %(owner_id)s AND created_at >= %(since)s
  AND (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY id'''

[[exports.orders.queries]]
name = "summary"
sql = "SELECT count(*) AS orders FROM shop.orders WHERE owner_id = %(owner_id)s"

[exports.uploads]
type = "files"
root = "@ROOT@/{owner_id}"
include = ["**/*.pdf"]
"""


async def setup_shop(conn: AConn) -> None:
    await conn.execute(
        """
        CREATE SCHEMA shop;
        CREATE TABLE shop.orders (id int PRIMARY KEY, owner_id text, total numeric,
                                  status text, created_at date);
        INSERT INTO shop.orders VALUES
            (1, 'alice', 10.50, 'paid', '2026-01-10'),
            (2, 'bob', 99.00, 'paid', '2026-02-01'),
            (3, 'alice', 7.25, 'open', '2026-03-05'),
            (4, 'alice', 1.00, 'x'' OR ''1''=''1', '2026-04-01');
        """
    )


def registry_for(tmp_path: Path, db_url: str) -> KindRegistry:
    uploads = tmp_path / "uploads"
    (uploads / "alice" / "2026").mkdir(parents=True)
    (uploads / "alice" / "2026" / "a.pdf").write_bytes(b"%PDF alice")
    (uploads / "alice" / "notes.txt").write_text("not included")
    (uploads / "bob").mkdir()
    (uploads / "bob" / "b.pdf").write_bytes(b"%PDF bob")
    (uploads / "alice" / "escape.pdf").symlink_to(uploads / "bob" / "b.pdf")
    exports = tmp_path / "exports.toml"
    exports.write_text(EXPORTS.replace("@ROOT@", str(uploads)))
    return KindRegistry(load_exports_file(exports, default_database_url=db_url))


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            out[member.name.split("/", 1)[1]] = handle.read()
        return out


async def run_export(
    aconn: AConn, db_url: str, tmp_path: Path, kind: str, params: dict[str, Any]
) -> tuple[Any, dict[str, bytes]]:
    registry = registry_for(tmp_path, db_url)
    settings = fast_settings(tmp_path)
    async with running_worker(settings, db_url, registry):
        job, _ = await create_export(
            aconn, registry, ExportRequest(kind=kind, params=params), owner_id="alice"
        )
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    path = LocalStorage(settings.storage_dir).resolve(done.package_path or "")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == done.package_sha256
    return done, members(path)


async def test_sql_export_contains_only_the_owners_rows(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    await setup_shop(aconn)
    done, files = await run_export(aconn, db_url, tmp_path, "orders", {"since": "2026-01-01"})
    rows = list(csv.reader(io.StringIO(files["orders.csv"].decode())))
    assert rows == [
        ["id", "total", "status"],
        ["1", "10.50", "paid"],
        ["3", "7.25", "open"],
        ["4", "1.00", "x' OR '1'='1"],
    ]
    manifest = json.loads(files["manifest.json"])
    assert [(f["path"], f["rows"]) for f in manifest["files"]] == [
        ("orders.csv", 3),
        ("summary.csv", 1),
    ]
    for entry in manifest["files"]:
        body = files[entry["path"]]
        assert entry["size"] == len(body)
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()
    assert manifest["params"] == {"since": "2026-01-01"}
    assert manifest["owner_id"] == "alice" and manifest["kind"] == "orders"
    assert done.result["rows"] == {"orders": 3, "summary": 1}


async def test_injection_in_a_text_param_is_only_data(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    await setup_shop(aconn)
    _, files = await run_export(aconn, db_url, tmp_path, "orders", {"status": "x' OR '1'='1"})
    rows = list(csv.reader(io.StringIO(files["orders.csv"].decode())))
    assert rows == [["id", "total", "status"], ["4", "1.00", "x' OR '1'='1"]]


async def test_file_export_bundles_only_allowed_files(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    _, files = await run_export(aconn, db_url, tmp_path, "uploads", {})
    assert set(files) == {"2026/a.pdf", "manifest.json"}
    assert files["2026/a.pdf"] == b"%PDF alice"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "not-a-date"}, "since"),
        ({"since": "2026-02-30"}, "since"),
        ({"owner_id": "bob"}, "owner_id"),
        ({"unknown": 1}, "unknown"),
        ({"status": 5}, "status"),
    ],
)
async def test_bad_params_are_refused_before_any_job_exists(
    aconn: AConn, db_url: str, tmp_path: Path, params: dict[str, Any], field: str
) -> None:
    registry = registry_for(tmp_path, db_url)
    with pytest.raises(ParamError) as info:
        await create_export(
            aconn, registry, ExportRequest(kind="orders", params=params), owner_id="alice"
        )
    assert info.value.field == field
    cur = await aconn.execute(
        "SELECT (SELECT count(*) FROM exportd.jobs), (SELECT count(*) FROM procrastinate_jobs)"
    )
    assert await cur.fetchone() == (0, 0)
