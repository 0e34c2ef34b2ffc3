"""GET /api/v1/kinds: the export kinds this server knows, and their parameters.

So a client can find out what it may ask for (DESIGN §16) instead of reading
the operator's exports file. The JSON of a kind is `Kind.describe()`
(daemon/kinds/registry.py), the same `exportd kinds ls --json` prints; its
OpenAPI schema is written here, next to the handler that sends it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from daemon.kinds.params import PARAM_TYPES
from web.context import api_context
from web.job_json import ref


async def list_kinds(request: Request) -> JSONResponse:
    """Any valid token may read the list: it says what exists, not whose."""
    ctx = api_context(request)
    ctx.principal(request)
    return JSONResponse({"data": ctx.registry.describe()})


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
                    "description": "Always false: kinds cannot be paused yet",
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
