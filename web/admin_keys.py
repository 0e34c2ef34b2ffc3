"""/api/v1/admin/keys: list, create and revoke API keys (admins only).

The same rules as `exportd keys` (both go through `daemon.api_keys`). A
created key is in the 201 answer and nowhere else, ever: the database holds
its hash. The key object is `daemon.api_keys.describe_key()` (what `exportd keys ls
--json` prints too); its OpenAPI schema is written here, next to the
handlers that send it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from daemon import api_keys
from daemon.api_keys import describe_key
from daemon.db import keys as key_store
from daemon.subjects import MAX_SUBJECT
from web.auth import Principal
from web.context import api_context
from web.errors import ApiError
from web.jobs import read_json_body

BODY_FIELDS = {"owner_id", "name", "admin", "expires_in_days", "rate_limit"}
# A created key is a secret: no cache may keep the answer that carries it.
NO_STORE = {"Cache-Control": "no-store"}

_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
# The schema of `daemon.api_keys.describe_key()`, field by field.
KEY_PROPERTIES: dict[str, dict[str, Any]] = {
    "prefix": {"type": "string", "description": "Public: names the key (exk_ + prefix + …)"},
    "owner_id": {"type": "string", "description": "The subject it acts as"},
    "name": {"type": "string"},
    "admin": {"type": "boolean"},
    "rate_limit": {
        "type": ["string", "null"],
        "description": "Its own limit ('600/minute', 'off'); null: its owner's, per subject",
    },
    "state": {"enum": ["active", "revoked", "expired"]},
    "created_at": _TIMESTAMP,
    "last_used_at": {**_NULLABLE_TIMESTAMP, "description": "Recorded at most once a minute"},
    "expires_at": _NULLABLE_TIMESTAMP,
    "revoked_at": _NULLABLE_TIMESTAMP,
}


def _admin(request: Request) -> Principal:
    principal = api_context(request).principal(request)
    if not principal.admin:
        raise ApiError(403, "FORBIDDEN", "only admins may manage API keys")
    return principal


def _refused(exc: api_keys.KeyRequestError) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", str(exc), field=exc.field)


async def list_keys(request: Request) -> JSONResponse:
    ctx = api_context(request)
    _admin(request)
    query = request.query_params
    unknown = sorted(set(query) - {"owner"})
    if unknown:
        raise ApiError(
            400, "VALIDATION_ERROR", f"unknown parameter {unknown[0]!r}", field=unknown[0]
        )
    owner = query.get("owner") or None
    if owner is not None and ("\x00" in owner or len(owner) > MAX_SUBJECT):
        raise ApiError(400, "VALIDATION_ERROR", "invalid owner", field="owner")
    async with ctx.connection() as conn:
        keys = await key_store.list_keys(conn, owner_id=owner)
    # Every key fits one page (keys are made by operators, a few per caller).
    return JSONResponse({"data": [describe_key(k) for k in keys], "next_cursor": None})


async def create_key(request: Request) -> JSONResponse:
    ctx = api_context(request)
    _admin(request)
    body = await read_json_body(request)
    unknown = sorted(set(body) - BODY_FIELDS)
    if unknown:
        raise ApiError(400, "VALIDATION_ERROR", f"unknown field {unknown[0]!r}", field=unknown[0])
    owner_id = body.get("owner_id")
    if not isinstance(owner_id, str):
        raise ApiError(400, "VALIDATION_ERROR", "owner_id (a string) is required", field="owner_id")
    admin = body.get("admin", False)
    if not isinstance(admin, bool):
        raise ApiError(400, "VALIDATION_ERROR", "admin must be true or false", field="admin")
    rate_limit = body.get("rate_limit")
    if rate_limit is not None and not isinstance(rate_limit, str):
        raise ApiError(
            400, "VALIDATION_ERROR", "rate_limit must be a string or null", field="rate_limit"
        )
    try:
        async with ctx.connection() as conn:
            made = await api_keys.create_key(
                conn,
                owner_id=owner_id,
                name=body.get("name", ""),
                admin=admin,
                expires_in_days=body.get("expires_in_days"),
                rate_limit=rate_limit,
            )
    except api_keys.KeyRequestError as exc:
        raise _refused(exc) from None
    return JSONResponse(
        {"data": {**describe_key(made.record), "key": made.key}}, status_code=201, headers=NO_STORE
    )


async def revoke_key(request: Request) -> JSONResponse:
    ctx = api_context(request)
    _admin(request)
    try:
        async with ctx.connection() as conn:
            revoked = await api_keys.revoke_key(conn, request.path_params["prefix"])
    except api_keys.KeyRequestError as exc:
        raise _refused(exc) from None
    except api_keys.KeyNotFound:
        raise ApiError(404, "KEY_NOT_FOUND", "no API key has this prefix") from None
    ctx.keys.forget(revoked.prefix)  # this process refuses it from now on
    return JSONResponse({"data": describe_key(revoked)})


def schemas() -> dict[str, Any]:
    """The `ApiKey`, `NewApiKey` and `CreateApiKey` schemas of /openapi.json."""
    key_schema: dict[str, Any] = {
        "type": "object",
        "required": list(KEY_PROPERTIES),
        "additionalProperties": False,
        "properties": KEY_PROPERTIES,
    }
    return {
        "ApiKey": key_schema,
        "NewApiKey": {
            **key_schema,
            "required": [*KEY_PROPERTIES, "key"],
            "properties": {
                **key_schema["properties"],
                "key": {
                    "type": "string",
                    "pattern": "^exk_[a-z2-7]{52}$",
                    "description": "The key: shown in this answer only, stored nowhere",
                },
            },
        },
        "CreateApiKey": {
            "type": "object",
            "required": ["owner_id"],
            "additionalProperties": False,
            "properties": {
                "owner_id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_SUBJECT,
                    "description": "The subject the key acts as (owns its jobs)",
                },
                "name": {"type": "string", "maxLength": api_keys.MAX_NAME},
                "admin": {"type": "boolean"},
                "expires_in_days": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": api_keys.MAX_EXPIRES_DAYS,
                },
                "rate_limit": {
                    "type": ["string", "null"],
                    "description": "'N/second', 'N/minute', 'N/hour' or 'off'; null: per subject",
                },
            },
        },
    }
