"""GET /api/v1/kinds: the export kinds this server knows, and their parameters;
POST /api/v1/admin/kinds/{kind}/pause|resume: hold a kind (admins only).

So a client can find out what it may ask for (DESIGN §16) instead of reading
the operator's exports file. The JSON of a kind is `Kind.describe()`
(daemon/kinds/registry.py), the same `exportd kinds ls --json` prints, with
`paused` read from the database; its OpenAPI schema is written here, next to
the handler that sends it. Pausing follows `daemon.kinds.pauses` (DESIGN §13),
as `exportd kinds pause|resume` does.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from daemon.errors import UnknownKind
from daemon.kinds import pauses
from daemon.kinds.params import PARAM_TYPES
from web.auth import Principal
from web.context import api_context
from web.errors import ApiError
from web.job_json import ref


async def list_kinds(request: Request) -> JSONResponse:
    """Any valid token may read the list: it says what exists, not whose."""
    ctx = api_context(request)
    ctx.principal(request)
    async with ctx.connection() as conn:
        kinds = await pauses.describe_kinds(conn, ctx.registry)
    return JSONResponse({"data": kinds})


async def pause_kind(request: Request) -> JSONResponse:
    """Pending jobs of the kind stay pending on every worker; running ones finish."""
    ctx = api_context(request)
    principal = _admin(request)
    name = _kind_name(request)
    async with ctx.connection() as conn:
        kind = await pauses.pause_kind(conn, ctx.registry, name, by=principal.subject)
    return JSONResponse({"data": kind})


async def resume_kind(request: Request) -> JSONResponse:
    """The kind's waiting jobs start at once."""
    ctx = api_context(request)
    _admin(request)
    name = _kind_name(request)
    async with ctx.connection() as conn:
        kind = await pauses.resume_kind(conn, ctx.registry, name)
    return JSONResponse({"data": kind})


def _admin(request: Request) -> Principal:
    principal = api_context(request).principal(request)
    if not principal.admin:
        raise ApiError(403, "FORBIDDEN", "only admins may pause or resume kinds")
    return principal


def _kind_name(request: Request) -> str:
    """The `{kind}` of the route, known to this server; else 404 naming the kinds."""
    registry = api_context(request).registry
    try:
        return registry.get(str(request.path_params["kind"])).name
    except UnknownKind as exc:
        raise ApiError(404, "KIND_NOT_FOUND", str(exc), field="kind") from None


def schemas() -> dict[str, Any]:
    """The `Kind` and `KindParam` schemas of /openapi.json."""
    return {
        "Kind": {
            "type": "object",
            "required": ["kind", "title", "params", "paused"],
            "additionalProperties": False,
            "properties": {
                "kind": {"type": "string", "description": "The name to POST as `kind`"},
                "title": {"type": ["string", "null"]},
                "params": {
                    "type": "object",
                    "description": "The parameters the kind declares, by name",
                    "additionalProperties": ref("KindParam"),
                },
                "paused": {
                    "type": "boolean",
                    "description": (
                        "Paused by an operator: its jobs may be created but wait"
                        " until it is resumed"
                    ),
                },
            },
        },
        "KindParam": {
            "type": "object",
            "required": ["type", "required", "default"],
            "additionalProperties": False,
            "properties": {
                "type": {
                    "enum": list(PARAM_TYPES),
                    "description": "JSON type: dates, timestamps and uuids are ISO strings",
                },
                "required": {"type": "boolean"},
                "default": {"description": "Used when the param is left out; null: none"},
            },
        },
    }
