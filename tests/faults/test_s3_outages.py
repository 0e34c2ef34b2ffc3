"""Object storage failing under a real `exportd worker` process.

- The S3 server (a private SeaweedFS, not the session's) dies (SIGKILL)
  while a package is being uploaded part by part: the attempt fails with a message
  safe to show the owner (no endpoint, bucket, key or credential), the
  server comes back on the same ports with the same data, and a retry
  completes the job; the upload the failed attempt could not abort is left
  to the sweep, which aborts it.
- Wrong credentials, a bucket that does not exist, a store that does not
  answer: the worker stops at start with one clear line on stderr.

S3Storage retries a failing request itself (5 tries, jittered backoff up to
~6 s in all against a refused connection), so each attempt made while the
store is down lasts a few seconds; the job's own retries are kept short.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from tests.e2e.processes import EXPORTD, free_port, outcomes, poll_until, worker, worker_env
from tests.s3_server import SeaweedServer, seaweed
from tests.s3_settings import PREFIX, object_keys, pending_uploads, s3_env

pytestmark = pytest.mark.slow
# Random bytes: a package of eight 8 MiB parts, uploaded over a second or more.
SIZE = 64 * 1024 * 1024


def leaks(text: str, server: SeaweedServer, bucket: str, *keys: str) -> list[str]:
    """What `text` must never show a job's owner or an operator's terminal."""
    host = server.endpoint_url.removeprefix("http://")
    secrets = [host, "http://", bucket, PREFIX, server.access_key, server.secret_key, *keys]
    return [s for s in [*secrets, "Traceback", ".tar.gz"] if s in text]


def error_texts(db_url: str, job_id: UUID) -> list[str]:
    """The job's error_message and every attempt's error, as stored."""
    with psycopg.connect(db_url) as conn:
        job = conn.execute(
            "SELECT error_message FROM exportd.jobs WHERE job_id = %s", (job_id,)
        ).fetchone()
        attempts = conn.execute(
            "SELECT error FROM exportd.job_attempts WHERE job_id = %s", (job_id,)
        ).fetchall()
    assert job is not None
    return [t for t in (job[0], *(a[0] for a in attempts)) if t is not None]


def job_row(db_url: str, job_id: UUID) -> tuple[str, str | None, str | None]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT status::text, package_path, package_sha256 FROM exportd.jobs WHERE job_id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    return str(row[0]), row[1], row[2]


def create_blob(env: dict[str, str]) -> UUID:
    done = subprocess.run(
        [EXPORTD, "export", "blob", "--owner=alice", "--max-attempts=10", f"--param=size={SIZE}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return UUID(done.stdout.split()[2])


def test_an_upload_cut_by_an_outage_fails_cleanly_and_a_retry_completes(
    db_url: str, tmp_path: Path
) -> None:
    with seaweed(tmp_path / "seaweed") as server:
        bucket = server.create_bucket()
        env = worker_env(db_url, tmp_path / "packages")
        env.update(s3_env(server, bucket), EXPORTD_WORK_DIR=str(tmp_path / "work"))
        with worker(env, tmp_path, "worker"):
            job_id = create_blob(env)
            poll_until(lambda: pending_uploads(server, bucket) != [], "an upload in flight")
            [cut] = pending_uploads(server, bucket)
            server.stop(crash=True)  # at once: no part in flight may finish
            poll_until(
                lambda: [o for o, _ in outcomes(db_url, job_id)][:1] == ["failed"],
                "the attempt cut by the outage failed",
                timeout=60,
            )
            during = error_texts(db_url, job_id)
            assert any("object storage" in t for t in during), during
            server.restart()
            poll_until(
                lambda: job_row(db_url, job_id)[0] == "completed",
                "the job completed once the store was back",
                timeout=120,
            )
        log = (tmp_path / "worker.log").read_text()
        tried = [o for o, _ in outcomes(db_url, job_id)]
        assert tried[-1] == "succeeded" and set(tried[:-1]) == {"failed"}, tried
        for text in during + error_texts(db_url, job_id):
            assert leaks(text, server, bucket, cut["Key"], cut["UploadId"]) == [], text
        assert leaks(log, server, bucket, cut["Key"], cut["UploadId"]) == []

        # One object, whole; the cut upload is still pending: its abort was
        # sent while the store was down ("left to the sweep").
        _, package_path, sha256 = job_row(db_url, job_id)
        live = f"{PREFIX}/{package_path}"
        assert object_keys(server, bucket) == [live]
        body = server.client.get_object(Bucket=bucket, Key=live)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sha256
        assert cut["Key"] != live
        assert [u["UploadId"] for u in pending_uploads(server, bucket)] == [cut["UploadId"]]
        assert "could not abort a multipart upload (left to the sweep)" in log

        swept = subprocess.run(
            [EXPORTD, "cleanup"],
            env={**env, "EXPORTD_ORPHAN_GRACE_SECONDS": "0"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert swept.returncode == 0, swept.stdout + swept.stderr
        assert pending_uploads(server, bucket) == []
        assert object_keys(server, bucket) == [live]


def start_failure(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXPORTD, "worker"], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong secret key", "access denied"),
        ("unknown access key", "access denied"),
        ("missing bucket", "no such bucket"),
    ],
)
def test_a_store_that_refuses_stops_the_worker_with_one_line(
    case: str,
    message: str,
    db_url: str,
    tmp_path: Path,
    s3_server: SeaweedServer,
    s3_bucket: str,
) -> None:
    env = worker_env(db_url, tmp_path / "packages")
    env.update(s3_env(s3_server, s3_bucket), EXPORTD_WORK_DIR=str(tmp_path / "work"))
    bucket = s3_bucket
    if case == "wrong secret key":
        env["AWS_SECRET_ACCESS_KEY"] = "not-" + s3_server.secret_key
    elif case == "unknown access key":
        env["AWS_ACCESS_KEY_ID"] = "AKIAEXPORTDUNKNOWN00"
    else:
        bucket = s3_bucket + "-missing"
        env["EXPORTD_STORAGE_URL"] = f"s3://{bucket}/{PREFIX}"
    result = start_failure(env)
    assert result.returncode == 1
    assert result.stderr == f"exportd: object storage refused the request ({message})\n"
    assert leaks(result.stdout + result.stderr, s3_server, bucket) == []
    assert env["AWS_SECRET_ACCESS_KEY"] not in result.stderr


def test_a_store_that_does_not_answer_stops_the_worker_after_its_retries(
    db_url: str, tmp_path: Path, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    env = worker_env(db_url, tmp_path / "packages")
    env.update(s3_env(s3_server, s3_bucket), EXPORTD_WORK_DIR=str(tmp_path / "work"))
    env["EXPORTD_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    result = start_failure(env)
    assert result.returncode == 1
    *retries, last = result.stderr.splitlines()
    assert last == "exportd: object storage unreachable (connection failed) after 5 attempts"
    assert len(retries) == 4 and all("retry" in line for line in retries), retries
    assert env["EXPORTD_S3_ENDPOINT_URL"].removeprefix("http://") not in result.stderr
    assert leaks(result.stderr, s3_server, s3_bucket) == []
