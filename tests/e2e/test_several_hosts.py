"""Several hosts on one bucket (DESIGN §8, §10): two `exportd worker`
processes and one `exportd web`, each with its own data and work directories
and nothing on disk in common, all on the session's SeaweedFS.

Exports created through the HTTP API run on both workers and download
byte-identical through the 302 redirect with `curl -L`, whole and resumed
(`curl -L -C -`). A worker killed with SIGKILL while its multipart upload is
in flight loses the attempt to the other worker, which completes the job;
every completed job then has exactly one object, and a sweep (`exportd
cleanup` with no grace period, on the killed host) aborts the upload the
dead worker left behind and removes its work directory, keeping every live
object.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.api_helpers import SECRET, token
from tests.e2e.processes import EXPORTD, outcomes, poll_until, web, worker, worker_env
from tests.s3_server import SeaweedServer
from tests.s3_settings import PREFIX, object_keys, pending_uploads, s3_env

pytestmark = pytest.mark.slow

OWNERS = ("alice", "bob", "carol", "dave", "erin", "frank")
EXPORTS = 30
# Most packages fit in one PUT; every fifth spans two multipart parts (8 MiB).
SMALL, MULTIPART = 200_000, 9 * 1024 * 1024
# Random bytes, so the package is as large: gzip and the upload of 64 MiB
# (eight parts) take long enough (a second or more) to kill the worker in
# the middle of its multipart upload.
KILLED_SIZE = 64 * 1024 * 1024


@dataclass
class Host:
    """One machine's view: its own directories and environment."""

    name: str
    root: Path
    env: dict[str, str]

    @property
    def work_dir(self) -> Path:
        return self.root / "work"


def make_host(tmp_path: Path, name: str, db_url: str, server: SeaweedServer, bucket: str) -> Host:
    """The environment of an exportd process on host `name`: the shared
    database and bucket, and directories no other host sees."""
    root = tmp_path / name
    env = worker_env(db_url, root / "unused")
    # Nothing points at a shared directory: packages live in the bucket only.
    del env["EXPORTD_STORAGE_DIR"]
    env.update(
        s3_env(server, bucket),
        EXPORTD_DATA_DIR=str(root / "data"),
        EXPORTD_WORK_DIR=str(root / "work"),
        EXPORTD_JWT_SECRET=SECRET,
        EXPORTD_RATE_LIMIT="off",
        EXPORTD_WORKER_CONCURRENCY="4",
    )
    return Host(name, root, env)


@dataclass
class Export:
    job_id: str
    owner: str
    size: int


def owner_headers(owner: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(owner)}"}


def rows(db_url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(db_url) as conn:
        found = conn.execute(
            "SELECT job_id::text, status::text, package_path, package_sha256,"
            " package_size_bytes, download_count FROM exportd.jobs"
        ).fetchall()
    names = ("status", "package_path", "sha256", "size", "download_count")
    return {str(r[0]): dict(zip(names, r[1:], strict=True)) for r in found}


def attempt_pids(db_url: str, job_id: str) -> list[int]:
    """The pid of the process that ran each attempt (`job_attempts.worker`
    is `exportd-worker HOST:PID#…`)."""
    with psycopg.connect(db_url) as conn:
        found = conn.execute(
            "SELECT worker FROM exportd.job_attempts WHERE job_id = %s ORDER BY run, attempt",
            (job_id,),
        ).fetchall()
    return [int(m[1]) for (w,) in found if (m := re.search(r":(\d+)#", w or ""))]


def curl(*args: str) -> str:
    done = subprocess.run(
        ["curl", "-sS", "-f", "-L", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_package(data: bytes, row: dict[str, Any], job_id: str, s3: bytes) -> None:
    """The bytes downloaded = the row's sha256 and size = the object in the
    bucket, and the manifest inside names this job and hashes its files right."""
    assert hashlib.sha256(data).hexdigest() == row["sha256"]
    assert len(data) == row["size"]
    assert data == s3
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers()}
        manifest = json.loads(_read(tar, members["manifest.json"]))
        assert manifest["job_id"] == job_id
        for entry in manifest["files"]:
            content = _read(tar, members[entry["path"]])
            assert len(content) == entry["size"]
            assert hashlib.sha256(content).hexdigest() == entry["sha256"]


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read()


@contextmanager
def hosts(
    tmp_path: Path, db_url: str, server: SeaweedServer, bucket: str
) -> Iterator[tuple[dict[str, subprocess.Popen[str]], dict[str, Host], str]]:
    """Workers on hosts a and b, the API on host c, started side by side
    (each start waits for its process to be ready)."""
    machines = {n: make_host(tmp_path, n, db_url, server, bucket) for n in ("a", "b", "c")}
    managers: list[AbstractContextManager[Any]] = [
        worker(machines["a"].env, tmp_path, "worker-a"),
        worker(machines["b"].env, tmp_path, "worker-b"),
        web(machines["c"].env, tmp_path, "web-c"),
    ]
    with ExitStack() as stack:
        with ThreadPoolExecutor(len(managers)) as pool:
            starts = [pool.submit(m.__enter__) for m in managers]
        for manager, start in zip(managers, starts, strict=True):
            if start.exception() is None:
                stack.push(manager.__exit__)
        a, b, base = (start.result() for start in starts)
        yield {"a": a, "b": b}, machines, base


def test_two_worker_hosts_and_an_api_host_share_only_the_bucket(
    db_url: str, tmp_path: Path, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    with (
        hosts(tmp_path, db_url, s3_server, s3_bucket) as (procs, machines, base),
        httpx.Client(base_url=base, timeout=30) as api,
    ):
        exports: list[Export] = []
        for index in range(EXPORTS):
            owner = OWNERS[index % len(OWNERS)]
            size = MULTIPART if index % 5 == 4 else SMALL + index
            answer = api.post(
                "/api/v1/jobs",
                json={"kind": "blob", "params": {"size": size}},
                headers=owner_headers(owner),
            )
            assert answer.status_code == 202, answer.text
            exports.append(Export(answer.json()["data"]["job_id"], owner, size))
        poll_until(
            lambda: all(r["status"] == "completed" for r in rows(db_url).values()),
            "all 30 exports completed",
            timeout=90,
        )
        pids = {pid for e in exports for pid in attempt_pids(db_url, e.job_id)}
        assert pids == {procs["a"].pid, procs["b"].pid}, "both worker hosts ran exports"

        # -- downloads through the redirect: whole, then resumed ---------------------
        done = rows(db_url)

        def download(number: int) -> None:
            export = exports[number]
            row = done[export.job_id]
            url = f"{base}/api/v1/jobs/{export.job_id}/download"
            auth = f"Authorization: Bearer {token(export.owner)}"
            key = f"{PREFIX}/{row['package_path']}"
            stored = s3_server.client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
            whole = tmp_path / f"whole-{number}.tar.gz"
            curl("-H", auth, "-o", str(whole), url)
            check_package(whole.read_bytes(), row, export.job_id, stored)
            # A download cut off after `cut` bytes, resumed by curl from there.
            cut = len(stored) // 3 + number
            resumed = tmp_path / f"resumed-{number}.tar.gz"
            resumed.write_bytes(stored[:cut])
            fetched = curl("-C", "-", "-w", "%{size_download}", "-H", auth, "-o", str(resumed), url)
            assert int(fetched) == len(stored) - cut, "curl resumed, not restarted"
            check_package(resumed.read_bytes(), row, export.job_id, stored)
            whole.unlink()
            resumed.unlink()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(download, range(EXPORTS)))  # raises the first failure
        # The whole-file redirect counts once; the ranged (resumed) one does not.
        assert {r["download_count"] for r in rows(db_url).values()} == {1}

        # -- SIGKILL one worker in the middle of its multipart upload ------------------
        created = api.post(
            "/api/v1/jobs",
            json={"kind": "blob", "params": {"size": KILLED_SIZE}, "max_attempts": 3},
            headers=owner_headers("alice"),
        )
        assert created.status_code == 202, created.text
        killed_job = created.json()["data"]["job_id"]
        poll_until(lambda: pending_uploads(s3_server, s3_bucket) != [], "an upload in flight")
        [victim_pid] = attempt_pids(db_url, killed_job)
        victim = next(n for n, p in procs.items() if p.pid == victim_pid)
        survivor = "b" if victim == "a" else "a"
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(timeout=10)
        [left] = pending_uploads(s3_server, s3_bucket)
        poll_until(
            lambda: rows(db_url)[killed_job]["status"] == "completed",
            "the killed worker's job completed by the other worker",
            timeout=90,
        )
        assert [o for o, _ in outcomes(db_url, killed_job)] == ["lost", "succeeded"]
        assert attempt_pids(db_url, killed_job) == [victim_pid, procs[survivor].pid]
        killed_row = rows(db_url)[killed_job]
        url = f"{base}/api/v1/jobs/{killed_job}/download"
        big = tmp_path / "big.tar.gz"
        curl("-H", f"Authorization: Bearer {token('alice')}", "-o", str(big), url)
        assert hashlib.sha256(big.read_bytes()).hexdigest() == killed_row["sha256"]
        big.unlink()

    # -- exactly one object per completed job; the dead worker's upload swept ---------
    final = rows(db_url)
    assert len(final) == EXPORTS + 1
    assert {r["status"] for r in final.values()} == {"completed"}
    live = sorted(f"{PREFIX}/{r['package_path']}" for r in final.values())
    assert len(set(live)) == len(live)
    assert object_keys(s3_server, s3_bucket) == live
    assert [u["UploadId"] for u in pending_uploads(s3_server, s3_bucket)] == [left["UploadId"]]
    assert left["Key"] not in live
    leftover = [p for p in machines[victim].work_dir.rglob("*") if killed_job in p.name]
    assert leftover, "the killed worker left its work directory behind"

    sweep = subprocess.run(
        [EXPORTD, "cleanup"],
        env={**machines[victim].env, "EXPORTD_ORPHAN_GRACE_SECONDS": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert pending_uploads(s3_server, s3_bucket) == []
    assert object_keys(s3_server, s3_bucket) == live, "the sweep kept every live object"
    assert not [p for p in machines[victim].work_dir.rglob("*") if killed_job in p.name]
    # No host ever held a package on its disk.
    for machine in machines.values():
        assert not list(machine.root.rglob("*.tar.gz"))
        assert not (machine.root / "data" / "packages").exists()
