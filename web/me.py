"""GET /api/v1/me: who the credential acts as.

The web pages sign in with it: one request tells them whether the pasted
token (or API key) is accepted, the subject to show and to list the exports
of (an admin's own list is `owner=<subject>`, not everyone's), and whether
to offer the admin page. A script can use it to check a credential too.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from web.context import api_context

JSON = "application/json"


async def whoami(request: Request) -> JSONResponse:
    principal = api_context(request).principal(request)
    data = {
        "subject": principal.subject,
        "admin": principal.admin,
        "credential": "api_key" if principal.key_prefix is not None else "jwt",
    }
    return JSONResponse({"data": data}, headers={"Cache-Control": "no-store"})


def schemas() -> dict[str, Any]:
    return {
        "Me": {
            "type": "object",
            "required": ["subject", "admin", "credential"],
            "additionalProperties": False,
            "properties": {
                "subject": {"type": "string", "description": "Owns the jobs it creates"},
                "admin": {"type": "boolean", "description": "Sees every owner's jobs"},
                "credential": {"enum": ["jwt", "api_key"]},
            },
        }
    }


def openapi_paths(secured: list[dict[str, list[str]]], common: dict[str, Any]) -> dict[str, Any]:
    """The path item of /openapi.json; `common`: web.openapi's COMMON answers."""
    body = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"$ref": "#/components/schemas/Me"}},
    }
    return {
        "/api/v1/me": {
            "get": {
                "operationId": "whoami",
                "summary": "The subject this credential acts as, and whether it is an admin",
                "security": secured,
                "responses": {
                    "200": {
                        "description": "The credential is accepted",
                        "content": {JSON: {"schema": body}},
                    },
                    **common,
                },
            }
        }
    }
