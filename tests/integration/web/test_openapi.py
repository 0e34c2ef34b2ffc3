"""/openapi.json: valid OpenAPI, names every route, and live answers conform."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route

from tests.api_helpers import api_client, api_settings, bearer
from tests.helpers import create
from web.app import routes
from web.openapi import document

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
DOC_URI = "urn:exportd:openapi"


def test_document_is_valid_openapi() -> None:
    validate(document())  # raises on any violation of the OpenAPI 3.1 schema


def test_every_route_is_described_and_every_description_is_served() -> None:
    served = set()
    for route in routes():
        assert isinstance(route, Route)
        for method in route.methods or ():
            served.add((route.path, method.lower()))
    described = {(path, method) for path, item in document()["paths"].items() for method in item}
    # Starlette answers HEAD wherever it answers GET; only the download's
    # HEAD is part of the contract.
    implicit_head = {(p, m) for p, m in served if m == "head"} - described
    assert served - implicit_head == described


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def check(response: httpx.Response, path: str, method: str) -> None:
    """Validate a live response's status and JSON body against the document."""
    doc = document()
    responses = doc["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method.upper()} {path} answered undocumented {status}"
    content = responses[status].get("content", {})
    if "application/json" not in content:
        return
    ref = f"{DOC_URI}#/" + _pointer(
        "paths", path, method, "responses", status, "content", "application/json", "schema"
    )
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    validator = jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)
    validator.validate(response.json())


async def test_live_answers_conform(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    alice, bob = bearer("alice"), bearer("bob")
    job = await create(aconn, "noop", owner="alice")
    one = "/api/v1/jobs/{job_id}"
    async with api_client(api_settings(tmp_path), db_url) as client:
        calls: list[tuple[str, str, httpx.Response]] = [
            ("/openapi.json", "get", await client.get("/openapi.json")),
            ("/healthz", "get", await client.get("/healthz")),
            ("/readyz", "get", await client.get("/readyz")),
            (
                "/api/v1/jobs",
                "post",
                await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=alice),
            ),
            (
                "/api/v1/jobs",
                "post",
                await client.post("/api/v1/jobs", json={"kind": "nope"}, headers=alice),
            ),
            ("/api/v1/jobs", "post", await client.post("/api/v1/jobs", json={"kind": "noop"})),
            ("/api/v1/jobs", "get", await client.get("/api/v1/jobs?limit=1", headers=alice)),
            ("/api/v1/jobs", "get", await client.get("/api/v1/jobs?limit=0", headers=alice)),
            (one, "get", await client.get(f"/api/v1/jobs/{job.job_id}", headers=alice)),
            (one, "get", await client.get(f"/api/v1/jobs/{job.job_id}", headers=bob)),
            (one, "get", await client.get("/api/v1/jobs/x", headers=alice)),
            (
                one + "/retry",
                "post",
                await client.post(f"/api/v1/jobs/{job.job_id}/retry", headers=alice),
            ),
            (
                one + "/download",
                "get",
                await client.get(f"/api/v1/jobs/{job.job_id}/download", headers=alice),
            ),
            (
                one + "/cancel",
                "post",
                await client.post(f"/api/v1/jobs/{job.job_id}/cancel", headers=alice),
            ),
            (
                one + "/cancel",
                "post",
                await client.post(f"/api/v1/jobs/{job.job_id}/cancel", headers=alice),
            ),
        ]
    statuses = [r.status_code for _, _, r in calls]
    assert statuses == [200, 200, 200, 202, 400, 401, 200, 400, 200, 403, 400, 409, 404, 202, 409]
    for path, method, response in calls:
        check(response, path, method)
    assert calls[0][2].json() == document()
