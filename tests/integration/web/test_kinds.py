"""GET /api/v1/kinds and the 400s that name what exists (DESIGN §16): a client
finds the kinds, their params, and what it got wrong, from the API alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.kinds.params import Param
from daemon.kinds.registry import Kind, KindRegistry
from tests.api_helpers import api_client, api_settings, bearer
from tests.integration.web.test_openapi import check
from web.openapi import document

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]


def orders_and_uploads() -> KindRegistry:
    """The two kinds of DESIGN §16's example."""
    orders = Kind(
        "orders",
        title="Orders since a date",
        params={
            "since": Param("date", default="1970-01-01"),
            "status": Param("text", required=True),
        },
    )
    uploads = Kind("uploads")
    for kind in (orders, uploads):
        kind.add_step("Nothing", _nothing)
    return KindRegistry([orders, uploads])


async def _nothing(ctx: Any) -> None:
    return None


async def test_kinds_lists_every_kind_with_its_params(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url, orders_and_uploads()) as client:
        response = await client.get("/api/v1/kinds", headers=bearer("anyone"))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "data": [
            {
                "kind": "orders",
                "title": "Orders since a date",
                "params": {
                    "since": {"type": "date", "required": False, "default": "1970-01-01"},
                    "status": {"type": "text", "required": True, "default": None},
                },
                "paused": False,
            },
            {"kind": "uploads", "title": None, "params": {}, "paused": False},
        ]
    }
    check(response, "/api/v1/kinds", "get")


async def test_kinds_needs_a_valid_token(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        missing = await client.get("/api/v1/kinds")
        forged = await client.get("/api/v1/kinds", headers={"Authorization": "Bearer x.y.z"})
    for response in (missing, forged):
        assert response.status_code == 401
        assert response.json()["code"] == "UNAUTHORIZED"
        check(response, "/api/v1/kinds", "get")


async def test_every_test_kind_is_listed_and_conforms(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.get("/api/v1/kinds", headers=bearer())
    assert response.status_code == 200
    names = [kind["kind"] for kind in response.json()["data"]]
    assert names == sorted(names) and {"noop", "typed", "three-steps"} <= set(names)
    typed = next(k for k in response.json()["data"] if k["kind"] == "typed")
    assert typed["params"]["text"] == {"type": "text", "required": True, "default": None}
    assert typed["params"]["float"]["type"] == "float"
    check(response, "/api/v1/kinds", "get")


async def test_unknown_kind_lists_the_known_ones(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url, orders_and_uploads()) as client:
        response = await client.post("/api/v1/jobs", json={"kind": "nope"}, headers=bearer())
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "unknown kind 'nope' (known: orders, uploads)"
    assert body["field"] == "kind"
    cur = await aconn.execute("SELECT count(*) FROM exportd.jobs")
    assert await cur.fetchone() == (0,)


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        (
            "orders",
            {"sinse": "2026-01-01", "status": "open"},
            "params.sinse: is not a parameter of kind 'orders' (parameters: since, status)",
        ),
        (
            "uploads",
            {"since": "2026-01-01"},
            "params.since: is not a parameter of kind 'uploads' (it takes no parameters)",
        ),
    ],
)
async def test_unknown_param_lists_the_declared_ones(
    db_url: str, tmp_path: Path, kind: str, params: dict[str, Any], message: str
) -> None:
    async with api_client(api_settings(tmp_path), db_url, orders_and_uploads()) as client:
        response = await client.post(
            "/api/v1/jobs", json={"kind": kind, "params": params}, headers=bearer()
        )
    assert response.status_code == 400
    assert response.json()["message"] == message
    assert response.json()["field"] == message.split(":")[0]


async def test_a_bad_priority_is_the_body_field_not_a_param(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.post(
            "/api/v1/jobs", json={"kind": "noop", "priority": "high"}, headers=bearer()
        )
    assert response.status_code == 400
    assert response.json()["field"] == "priority"
    assert response.json()["message"] == "priority: must be an integer"


async def test_a_huge_unknown_name_is_cut_in_the_message(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.post("/api/v1/jobs", json={"kind": "k" * 30_000}, headers=bearer())
    assert response.status_code == 400
    assert len(response.json()["message"]) < 1000


def test_the_openapi_document_describes_kinds_and_points_create_at_it() -> None:
    doc = document()
    assert doc["paths"]["/api/v1/kinds"]["get"]["operationId"] == "listKinds"
    create = doc["components"]["schemas"]["CreateJob"]["properties"]
    assert "/api/v1/kinds" in create["params"]["description"]
    assert "/api/v1/kinds" in create["kind"]["description"]
    assert doc["components"]["schemas"]["Kind"]["properties"]["paused"]["type"] == "boolean"
