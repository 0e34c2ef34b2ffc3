"""Bad input everywhere: every malformed request is a 4xx with the JSON error
body and writes nothing (real app, real database)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.api_helpers import api_client, api_settings, bearer, token

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
ALICE = bearer("alice")
JSON = {"Content-Type": "application/json", **ALICE}


async def rows(conn: AConn) -> tuple[int, int]:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM exportd.jobs), (SELECT count(*) FROM procrastinate_jobs)"
    )
    found = await cur.fetchone()
    assert found is not None
    return int(found[0]), int(found[1])


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD_BODIES: list[tuple[str, bytes]] = [
    ("not json", b"{kind: noop}"),
    ("array", b'["noop"]'),
    ("invalid utf-8", b'{"kind": "\xff\xfe"}'),
    ("NUL in kind", b'{"kind": "no\\u0000op"}'),
    ("unknown kind", b'{"kind": "nope"}'),
    ("kind not a string", b'{"kind": 12}'),
    ("deep nesting", ('{"kind": "typed", "params": {"text": ' + nested(20_000) + "}}").encode()),
    ("nested params", b'{"kind": "typed", "params": {"text": {"a": {"b": [1, 2, {"c": 3}]}}}}'),
    ("missing required", b'{"kind": "typed", "params": {}}'),
    ("unknown param", b'{"kind": "typed", "params": {"text": "x", "drop table": 1}}'),
    ("NUL in text", b'{"kind": "typed", "params": {"text": "a\\u0000b"}}'),
    ("NUL in a param name", b'{"kind": "typed", "params": {"text": "a", "x\\u0000": 1}}'),
    ("lone surrogate", b'{"kind": "typed", "params": {"text": "\\ud800"}}'),
    ("int as string", b'{"kind": "typed", "params": {"text": "a", "int": "1"}}'),
    ("int too big", b'{"kind": "typed", "params": {"text": "a", "int": 99999999999999999999}}'),
    ("bool as int", b'{"kind": "typed", "params": {"text": "a", "bool": 1}}'),
    ("float NaN", b'{"kind": "typed", "params": {"text": "a", "float": NaN}}'),
    ("float Infinity", b'{"kind": "typed", "params": {"text": "a", "float": Infinity}}'),
    ("float overflow", b'{"kind": "typed", "params": {"text": "a", "float": 1e999}}'),
    ("bad date", b'{"kind": "typed", "params": {"text": "a", "date": "2026-02-30"}}'),
    (
        "naive timestamp",
        b'{"kind": "typed", "params": {"text": "a", "timestamp": "2026-01-01T00:00"}}',
    ),
    ("bad uuid", b'{"kind": "typed", "params": {"text": "a", "uuid": "xyz"}}'),
    ("params a list", b'{"kind": "typed", "params": ["text"]}'),
    ("priority string", b'{"kind": "noop", "priority": "high"}'),
    ("priority huge", b'{"kind": "noop", "priority": 1e400}'),
    ("priority out of range", b'{"kind": "noop", "priority": 5000}'),
    ("delay negative", b'{"kind": "noop", "delay_seconds": -1}'),
    ("delay NaN", b'{"kind": "noop", "delay_seconds": NaN}'),
    ("delay Infinity", b'{"kind": "noop", "delay_seconds": Infinity}'),
    ("delay too long", b'{"kind": "noop", "delay_seconds": 1e12}'),
    ("max_attempts zero", b'{"kind": "noop", "max_attempts": 0}'),
    ("max_attempts float", b'{"kind": "noop", "max_attempts": 2.5}'),
    ("unknown field", b'{"kind": "noop", "owner_id": "bob"}'),
    ("empty", b""),
]


@pytest.mark.parametrize(("case", "body"), BAD_BODIES, ids=[c for c, _ in BAD_BODIES])
async def test_bad_create_bodies_are_400_and_write_nothing(
    aconn: AConn, db_url: str, tmp_path: Path, case: str, body: bytes
) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.post("/api/v1/jobs", content=body, headers=JSON)
    assert response.status_code == 400, (case, response.status_code, response.text)
    error = response.json()
    assert error["status"] == "error" and error["code"] == "VALIDATION_ERROR"
    assert set(error) >= {"status", "code", "message", "timestamp"}
    assert "Traceback" not in response.text and "SELECT" not in response.text
    assert await rows(aconn) == (0, 0)


async def test_ten_megabyte_body_is_413(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    body = b'{"kind": "noop", "params": {"x": "' + b"a" * 10_000_000 + b'"}}'
    async with api_client(api_settings(tmp_path), db_url) as client:
        declared = await client.post("/api/v1/jobs", content=body, headers=JSON)

        async def chunks() -> Any:
            for start in range(0, len(body), 1 << 20):
                yield body[start : start + (1 << 20)]

        streamed = await client.post("/api/v1/jobs", content=chunks(), headers=JSON)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert await rows(aconn) == (0, 0)


@pytest.mark.parametrize(
    "query",
    [
        "limit=1000000000000000000000",
        "limit=-1",
        "limit=abc",
        "status=done",
        "cursor=forged",
        "cursor=" + "A" * 5000,
        "kind=a%00b",
        "owner=bob",
        "nope=1",
        "limit=1%00",
    ],
)
async def test_bad_list_queries_are_4xx(
    aconn: AConn, db_url: str, tmp_path: Path, query: str
) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.get(f"/api/v1/jobs?{query}", headers=ALICE)
    assert response.status_code in (400, 403), (query, response.text)
    assert response.json()["status"] == "error"


@pytest.mark.parametrize(
    "job_id",
    [
        "x",
        "0",
        "%00",
        "..%2F..%2Fetc%2Fpasswd",
        "a" * 5000,
        "00000000-0000-0000-0000-00000000000g",
    ],
)
async def test_bad_job_ids_are_400(db_url: str, tmp_path: Path, job_id: str) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        for method, suffix in (
            ("GET", ""),
            ("POST", "/retry"),
            ("POST", "/cancel"),
            ("GET", "/download"),
            ("GET", "/events"),
        ):
            response = await client.request(method, f"/api/v1/jobs/{job_id}{suffix}", headers=ALICE)
            assert response.status_code in (400, 404), (method, suffix, response.text)
            assert response.json()["status"] == "error"


async def test_bad_idempotency_keys(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        for key in (b"", b"a" * 256, b"tab\there", "é".encode()):
            headers = [(k.encode(), v.encode()) for k, v in ALICE.items()]
            response = await client.post(
                "/api/v1/jobs", json={"kind": "noop"}, headers=[*headers, (b"Idempotency-Key", key)]
            )
            assert response.status_code == 400, key
    assert await rows(aconn) == (0, 0)


# -- numbers in the query, and odd subjects: 4xx, never 5xx (DESIGN §16) --------


@pytest.mark.parametrize(
    "limit",
    [
        "%C2%B2",  # "²": str.isdigit() says yes, int() says no
        "%E2%91%A0",  # "①"
        "%D9%A3",  # "٣", Arabic-Indic three: int() would take it
        "%EF%BC%91",  # U+FF11, fullwidth digit one
        "9" * 5000,  # more digits than int() converts
        "0" * 5000 + "1",
        "1_0",
        "+5",
        " 5",
        "",
    ],
    ids=[
        "superscript",
        "circled",
        "arabic",
        "fullwidth",
        "5000 digits",
        "zeros",
        "_",
        "+",
        "sp",
        "",
    ],
)
async def test_odd_digits_in_limit_are_400(db_url: str, tmp_path: Path, limit: str) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.get(f"/api/v1/jobs?limit={limit}", headers=ALICE)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "limit"


ODD_SUBJECTS: list[tuple[str, Any]] = [
    ("lone surrogate", "\ud800"),
    ("surrogate inside", "ali\udfffce"),
    ("NUL", "ali\x00ce"),
    ("bell", "ali\x07ce"),
    ("newline", "alice\n"),
    ("300 characters", "a" * 300),
    # Incompressible, so before the bound its index key was too large: a 503.
    ("3000 random characters", secrets.token_urlsafe(2250)),
    ("10 KB", "b" * 10_000),
    ("empty", ""),
    ("a number", 12),
    ("a list", ["alice"]),
]


@pytest.mark.parametrize(("case", "sub"), ODD_SUBJECTS, ids=[c for c, _ in ODD_SUBJECTS])
async def test_odd_subjects_are_401_on_list_and_create(
    aconn: AConn, db_url: str, tmp_path: Path, case: str, sub: Any
) -> None:
    headers = {"Authorization": f"Bearer {token(sub)}"}
    async with api_client(api_settings(tmp_path), db_url) as client:
        listed = await client.get("/api/v1/jobs", headers=headers)
        created = await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=headers)
        kinds = await client.get("/api/v1/kinds", headers=headers)
    for response in (listed, created, kinds):
        assert response.status_code == 401, (case, response.status_code, response.text)
        assert response.json()["code"] == "UNAUTHORIZED"
    assert await rows(aconn) == (0, 0)


async def test_the_longest_subject_creates_and_lists_its_jobs(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """255 characters of four UTF-8 bytes each: within every bound downstream."""
    sub = "\U0001f600" * 255
    headers = {"Authorization": f"Bearer {token(sub)}"}
    async with api_client(api_settings(tmp_path), db_url) as client:
        created = await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=headers)
        listed = await client.get("/api/v1/jobs", headers=headers)
        mine = await client.get(f"/api/v1/jobs?owner={sub}", headers=headers)
    assert created.status_code == 202, created.text
    assert [j["job_id"] for j in listed.json()["data"]] == [created.json()["data"]["job_id"]]
    assert mine.status_code == 200 and len(mine.json()["data"]) == 1
    assert await rows(aconn) == (1, 1)
