"""`exportd keys create|ls|revoke` as a shell runs them, and the keys they
make against a real `exportd web` process: a key acts as its owner, and one
revoked by the CLI is refused by the running server within seconds."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.api_helpers import SECRET, bearer
from tests.e2e.processes import EXPORTD, poll_until, web, worker_env
from tests.e2e.test_cli import NO_DATABASE, clean_env, run

pytestmark = pytest.mark.slow
KEY = re.compile(r"exk_[a-z2-7]{52}")
# DESIGN §17: a revoked key is refused "at once (no cache longer than a few seconds)".
REVOCATION_SECONDS = 5.0


def keys(db_url: str, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = worker_env(db_url, Path("/nonexistent"), COLUMNS=str(columns))
    return subprocess.run(
        [EXPORTD, "keys", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def created_key(db_url: str, *args: str) -> str:
    made = keys(db_url, "create", *args)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert KEY.fullmatch(key), made.stdout
    return key


def listed(db_url: str) -> list[dict[str, object]]:
    result = keys(db_url, "ls", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)["data"]
    return rows


def test_create_ls_revoke_round_trip(db_url: str) -> None:
    made = keys(db_url, "create", "--owner", "svc-billing", "--name", "billing", "--expires", "30")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    prefix = key[4:14]
    assert KEY.fullmatch(key) and made.stdout == key + "\n"  # alone: KEY=$(exportd keys create …)
    assert f"created API key {prefix} (for svc-billing, expires " in made.stderr
    assert "shown only this once" in made.stderr and key not in made.stderr

    narrow = keys(db_url, "ls")
    assert narrow.returncode == 0, narrow.stderr
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    assert prefix in narrow.stdout, narrow.stdout  # whole: it is typed back into revoke
    wide = keys(db_url, "ls", columns=160)
    for shown in (prefix, "svc-billing", "billing", "never", "expires 20"):
        assert shown in wide.stdout, wide.stdout
    assert key[14:20] not in wide.stdout
    (row,) = listed(db_url)
    assert row["prefix"] == prefix and row["state"] == "active" and row["expires_at"]

    revoked = keys(db_url, "revoke", prefix)
    assert revoked.returncode == 0, revoked.stderr
    assert f"API key {prefix} (svc-billing) revoked at " in revoked.stdout
    (row,) = listed(db_url)
    assert row["state"] == "revoked" and row["revoked_at"]
    again = keys(db_url, "revoke", f"exk_{prefix}")
    assert again.returncode == 0, again.stderr
    (row_again,) = listed(db_url)
    assert row_again["revoked_at"] == row["revoked_at"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("revoke", "aaaaaaaaaa"), "exportd: no API key has the prefix aaaaaaaaaa"),
        (("revoke", "nope"), "exportd: not a key prefix"),
        (("create", "--owner", ""), "exportd: the owner must be a non-empty string"),
        (("create", "--owner", "x", "--expires", "0"), "exportd: expires_in_days must be"),
        (("create", "--owner", "x", "--rate-limit", "fast"), "exportd: rate_limit must look"),
        (("create", "--owner", "x", "--name", "a\tb"), "exportd: name must be text"),
    ],
)
def test_refusals_are_one_line(db_url: str, args: tuple[str, ...], message: str) -> None:
    result = keys(db_url, *args)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert listed(db_url) == []


def test_a_running_web_process_refuses_a_revoked_key_within_seconds(
    db_url: str, tmp_path: Path
) -> None:
    key = created_key(db_url, "--owner", "svc")
    expired = created_key(db_url, "--owner", "svc", "--expires", "1")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE exportd.api_keys SET expires_at = now() - interval '1 second'"
            " WHERE prefix = %s",
            (expired[4:14],),
        )
    env = worker_env(db_url, tmp_path / "packages", EXPORTD_JWT_SECRET=SECRET)
    with web(env, tmp_path) as base:
        created = httpx.post(
            f"{base}/api/v1/jobs", json={"kind": "noop"}, headers={"X-API-Key": key}
        )
        assert created.status_code == 202, created.text
        job_url = f"{base}/api/v1/jobs/{created.json()['data']['job_id']}"
        mine = httpx.get(job_url, headers={"Authorization": f"Bearer {key}"})
        assert mine.status_code == 200 and mine.json()["data"]["owner_id"] == "svc"
        bobs = httpx.post(f"{base}/api/v1/jobs", json={"kind": "noop"}, headers=bearer("bob"))
        bobs_url = f"{base}/api/v1/jobs/{bobs.json()['data']['job_id']}"
        assert httpx.get(bobs_url, headers={"X-API-Key": key}).status_code == 403
        old = httpx.get(job_url, headers={"X-API-Key": expired})
        assert old.status_code == 401 and "expired" in old.json()["message"]
        off = key[:-1] + ("a" if key[-1] != "a" else "b")
        assert httpx.get(job_url, headers={"X-API-Key": off}).status_code == 401

        revoked = keys(db_url, "revoke", key[4:14])  # another process: the CLI
        assert revoked.returncode == 0, revoked.stderr
        since = time.monotonic()
        poll_until(
            lambda: httpx.get(job_url, headers={"X-API-Key": key}).status_code == 401,
            "the revoked key refused",
            timeout=REVOCATION_SECONDS,
        )
        assert time.monotonic() - since < REVOCATION_SECONDS
        answer = httpx.get(job_url, headers={"X-API-Key": key}).json()
    assert answer["code"] == "UNAUTHORIZED" and "revoked" in answer["message"]


def test_without_a_database_or_its_schema_keys_say_so_in_one_line(
    empty_db_url: str, tmp_path: Path
) -> None:
    env = clean_env()
    nowhere = run("keys", "ls", env=env, cwd=tmp_path)
    assert nowhere.returncode == 2 and nowhere.stderr == NO_DATABASE
    assert list(tmp_path.iterdir()) == []  # no embedded server made on the way
    unmigrated = run(
        "keys", "create", "--owner", "x", env={**env, "EXPORTD_DATABASE_URL": empty_db_url}
    )
    assert unmigrated.returncode == 1 and unmigrated.stdout == ""
    assert (
        unmigrated.stderr
        == "exportd: the database schema is not up to date; run `exportd migrate`\n"
    )
