"""Resume across hosts (DESIGN §14): a worker process killed with SIGKILL
during step 3 of a 4-query SQL export; the rescued attempt runs on another
worker process — its own work directory, nothing on disk in common, packages
and checkpoints in the bucket — and starts at step 3 with the two kept
files fetched from the object store.

Which queries ran is counted in a side table filled through `dblink` (the
export's transaction is read-only)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import tarfile
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from tests.e2e.processes import EXPORTD, outcomes, poll_until, wait_status, worker, worker_env
from tests.resume_schema import four_queries, side_table_statements
from tests.s3_server import SeaweedServer
from tests.s3_settings import PREFIX, object_keys, s3_env

pytestmark = pytest.mark.slow

EXPORTS = four_queries("block_once")


def side_tables(db_url: str) -> None:
    """t.ran (which query ran), t.flag (q3 hangs while it has a row)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS dblink")
        except psycopg.Error as exc:
            pytest.skip(f"the dblink extension is not available on this server: {exc}")
        for statement in side_table_statements(db_url):
            conn.execute(statement)


def host_env(
    tmp_path: Path, name: str, db_url: str, server: SeaweedServer, bucket: str, exports: Path
) -> dict[str, str]:
    root = tmp_path / name
    env = worker_env(db_url, root / "unused")
    del env["EXPORTD_STORAGE_DIR"]
    env.update(
        s3_env(server, bucket),
        EXPORTD_DATA_DIR=str(root / "data"),
        EXPORTD_WORK_DIR=str(root / "work"),
        EXPORTD_EXPORTS_FILE=str(exports),
    )
    return env


def query(db_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def test_a_rescued_attempt_resumes_at_step_three_on_another_host(
    db_url: str, tmp_path: Path, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    side_tables(db_url)
    exports = tmp_path / "exports.toml"
    exports.write_text(EXPORTS)
    env_a = host_env(tmp_path, "a", db_url, s3_server, s3_bucket, exports)
    env_b = host_env(tmp_path, "b", db_url, s3_server, s3_bucket, exports)
    created = subprocess.run(
        [EXPORTD, "export", "four", "--owner", "alice", "--max-attempts", "3"],
        env=env_a,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    job_id = UUID(created.stdout.split()[2])
    try:
        with worker(env_a, tmp_path, "worker-a") as first:
            poll_until(
                lambda: ("q3",) in query(db_url, "SELECT query FROM t.ran"),
                "step 3 started on host a",
                timeout=60,
            )
            # Steps 1 and 2 are kept in the bucket before step 3 starts.
            kept = [k for k in object_keys(s3_server, s3_bucket) if "/.checkpoints/" in k]
            assert any(k.endswith("/step-1.json") for k in kept), kept
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        with worker(env_b, tmp_path, "worker-b"):
            status = wait_status(db_url, job_id, "completed", "failed", "rolled_back", timeout=90)
    finally:
        # The killed worker's query sleeps on in its backend: end it.
        query(
            db_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE '%%block_once%%' AND pid <> pg_backend_pid()",
        )
    assert status == "completed"
    assert [o for o, _ in outcomes(db_url, job_id)] == ["lost", "succeeded"]
    resumed = query(
        db_url,
        "SELECT resumed_from_step FROM exportd.job_attempts WHERE job_id = %s ORDER BY attempt",
        job_id,
    )
    assert resumed == [(None,), (3,)]
    ran = dict(query(db_url, "SELECT query, count(*) FROM t.ran GROUP BY query"))
    assert ran == {"q1": 1, "q2": 1, "q3": 2, "q4": 1}
    # Host b never ran steps 1 and 2, yet their files are in the package.
    [(package_path, result)] = query(
        db_url, "SELECT package_path, result FROM exportd.jobs WHERE job_id = %s", job_id
    )
    assert result == {"rows": {"q1": 10, "q2": 20, "q3": 30, "q4": 40}}
    data = s3_server.client.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/{package_path}")
    with tarfile.open(fileobj=io.BytesIO(data["Body"].read())) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers()}
        manifest_file = tar.extractfile(members["manifest.json"])
        assert manifest_file is not None
        manifest = json.loads(manifest_file.read())
        q1 = tar.extractfile(members["q1.csv"])
        assert q1 is not None
        assert q1.read().decode().splitlines() == ["n", *map(str, range(1, 11))]
    assert {e["path"]: e["rows"] for e in manifest["files"]} == {
        "q1.csv": 10,
        "q2.csv": 20,
        "q3.csv": 30,
        "q4.csv": 40,
    }
    # The run ended: its checkpoint leaves the bucket (deleted just after the
    # completion commits, so the status can be seen a moment before).
    poll_until(
        lambda: not [k for k in object_keys(s3_server, s3_bucket) if "/.checkpoints/" in k],
        "the completed run's checkpoint deleted from the bucket",
    )
