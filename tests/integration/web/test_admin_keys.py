"""/api/v1/admin/keys: admins (tokens or keys) list, create and revoke API
keys; everyone else is refused; answers conform to /openapi.json; the key is
in the creation answer and nowhere else."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon import api_keys
from daemon.db import keys as key_store
from tests.api_helpers import api_client, api_settings, bearer
from tests.integration.web.test_openapi import check

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
KEYS = "/api/v1/admin/keys"
REVOKE = "/api/v1/admin/keys/{prefix}/revoke"
ADMIN = bearer("root", admin=True)
KEY = re.compile(r"exk_[a-z2-7]{52}")


async def test_non_admin_tokens_and_keys_are_refused(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    key = (await api_keys.create_key(aconn, owner_id="alice")).key
    prefix = key[4:14]
    callers: dict[str, dict[str, str]] = {
        "token": bearer("alice"),
        "key": {"X-API-Key": key},
        "bearer key": {"Authorization": f"Bearer {key}"},
    }
    async with api_client(api_settings(tmp_path), db_url) as client:
        for who, headers in callers.items():
            answers = {
                "list": await client.get(KEYS, headers=headers),
                "create": await client.post(KEYS, json={"owner_id": who}, headers=headers),
                "revoke": await client.post(REVOKE.format(prefix=prefix), headers=headers),
            }
            for what, response in answers.items():
                assert response.status_code == 403, (who, what, response.text)
                assert response.json()["code"] == "FORBIDDEN"
        anonymous = await client.get(KEYS)
        still = await client.get("/api/v1/kinds", headers={"X-API-Key": key})
    assert anonymous.status_code == 401
    assert still.status_code == 200  # not revoked by the refused call
    (only,) = await key_store.list_keys(aconn)  # nothing created
    assert only.revoked_at is None


async def test_create_list_revoke_as_an_admin(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        created = await client.post(
            KEYS,
            json={
                "owner_id": "svc-billing",
                "name": "billing nightly",
                "expires_in_days": 30,
                "rate_limit": "600/Minute",
            },
            headers=ADMIN,
        )
        check(created, KEYS, "post")
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        made = created.json()["data"]
        key = made["key"]
        assert KEY.fullmatch(key) and made["prefix"] == key[4:14]
        assert made["owner_id"] == "svc-billing" and made["name"] == "billing nightly"
        assert made["rate_limit"] == "600/minute" and made["state"] == "active"
        assert made["admin"] is False and made["expires_at"] > made["created_at"]

        # An admin key may manage keys too.
        boss = await client.post(KEYS, json={"owner_id": "ops", "admin": True}, headers=ADMIN)
        admin_key = {"X-API-Key": boss.json()["data"]["key"]}
        assert (await client.get("/api/v1/jobs", headers={"X-API-Key": key})).status_code == 200
        listed = await client.get(KEYS, headers=admin_key)
        check(listed, KEYS, "get")
        one_owner = await client.get(f"{KEYS}?owner=svc-billing", headers=ADMIN)

        revoked = await client.post(REVOKE.format(prefix="exk_" + made["prefix"]), headers=ADMIN)
        check(revoked, REVOKE, "post")
        again = await client.post(REVOKE.format(prefix=made["prefix"]), headers=admin_key)
        refused = await client.get("/api/v1/jobs", headers={"X-API-Key": key})
        unknown = await client.post(REVOKE.format(prefix="a" * 10), headers=ADMIN)
        check(unknown, REVOKE, "post")
        malformed = await client.post(REVOKE.format(prefix="nope"), headers=ADMIN)
        check(malformed, REVOKE, "post")

    assert listed.status_code == 200 and listed.json()["next_cursor"] is None
    rows = listed.json()["data"]
    assert [r["owner_id"] for r in rows] == ["ops", "svc-billing"]  # newest first
    assert all("key" not in row and "key_sha256" not in row for row in rows)
    assert key not in listed.text and key[14:] not in listed.text
    assert rows[1]["last_used_at"] is not None  # it was used above
    assert [r["prefix"] for r in one_owner.json()["data"]] == [made["prefix"]]
    assert revoked.status_code == 200 and revoked.json()["data"]["state"] == "revoked"
    assert again.status_code == 200
    assert again.json()["data"]["revoked_at"] == revoked.json()["data"]["revoked_at"]
    assert refused.status_code == 401
    assert unknown.status_code == 404 and unknown.json()["code"] == "KEY_NOT_FOUND"
    assert malformed.status_code == 400 and malformed.json()["field"] == "prefix"


BAD_BODIES: dict[str, tuple[Any, str | None]] = {
    "no owner": ({}, "owner_id"),
    "empty owner": ({"owner_id": ""}, "owner_id"),
    "numeric owner": ({"owner_id": 5}, "owner_id"),
    "owner too long": ({"owner_id": "o" * 256}, "owner_id"),
    "owner with NUL": ({"owner_id": "a\u0000b"}, "owner_id"),
    "owner with a lone surrogate": ({"owner_id": "a\ud800"}, None),  # refused as JSON
    "name too long": ({"owner_id": "x", "name": "n" * 201}, "name"),
    "null name": ({"owner_id": "x", "name": None}, "name"),
    "name with a newline": ({"owner_id": "x", "name": "a\nb"}, "name"),
    "admin as text": ({"owner_id": "x", "admin": "yes"}, "admin"),
    "zero days": ({"owner_id": "x", "expires_in_days": 0}, "expires_in_days"),
    "too many days": ({"owner_id": "x", "expires_in_days": 3651}, "expires_in_days"),
    "days as text": ({"owner_id": "x", "expires_in_days": "7"}, "expires_in_days"),
    "days as bool": ({"owner_id": "x", "expires_in_days": True}, "expires_in_days"),
    "fractional days": ({"owner_id": "x", "expires_in_days": 1.5}, "expires_in_days"),
    "odd rate": ({"owner_id": "x", "rate_limit": "fast"}, "rate_limit"),
    "numeric rate": ({"owner_id": "x", "rate_limit": 5}, "rate_limit"),
    "huge rate": ({"owner_id": "x", "rate_limit": "9999999999/minute"}, "rate_limit"),
    "10 KB rate": ({"owner_id": "x", "rate_limit": "1" * 10_000 + "/minute"}, "rate_limit"),
    "unknown field": ({"owner_id": "x", "key": "exk_mine"}, "key"),
    "not an object": ([], None),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_bad_bodies_are_400_and_write_nothing(
    case: str, aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    body, field = BAD_BODIES[case]
    async with api_client(api_settings(tmp_path), db_url) as client:
        # json.dumps escapes what httpx's encoder refuses (a lone surrogate).
        response = await client.post(
            KEYS, content=json.dumps(body), headers={**ADMIN, "Content-Type": "application/json"}
        )
    check(response, KEYS, "post")
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == "VALIDATION_ERROR" and answer.get("field") == field
    assert len(answer["message"]) < 200  # says what is wrong, never echoes 10 KB
    assert await key_store.list_keys(aconn) == []


async def test_list_refuses_unknown_parameters(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        unknown = await client.get(f"{KEYS}?limit=5", headers=ADMIN)
        long_owner = await client.get(KEYS, params={"owner": "o" * 300}, headers=ADMIN)
    for response in (unknown, long_owner):
        check(response, KEYS, "get")
        assert response.status_code == 400 and response.json()["code"] == "VALIDATION_ERROR"
