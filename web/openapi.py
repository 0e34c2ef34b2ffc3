"""GET /openapi.json: the OpenAPI 3.1 description of the whole HTTP API.

Written out by hand rather than generated from docstrings: the document is a
contract for client authors (DESIGN §6), so every status code and error code
is listed on purpose, and tests/integration/web/test_openapi.py checks that it
validates, that it names every route the app serves, and that live
responses conform to it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from daemon import __version__
from daemon.actions import MAX_DELAY_SECONDS
from daemon.db.jobs import MAX_PAGE
from daemon.links import MAX_TOKEN_LENGTH
from daemon.models import JobStatus
from web import admin, me
from web.admin_keys import schemas as key_schemas
from web.job_json import schemas as job_schemas
from web.kinds import schemas as kind_schemas

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, *codes: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"allOf": [_ref("Error")]}
    if codes:
        schema["allOf"].append({"properties": {"code": {"enum": list(codes)}}})
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _job(description: str, status: int = 200) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": _ref("Job")},
                }
            }
        },
    }


RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}

# Answers any authenticated endpoint may give.
COMMON = {
    "401": _error(
        "Missing, malformed, expired or wrongly signed token; unknown, revoked or expired API key",
        "UNAUTHORIZED",
        headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "429": _error("Too many requests for this subject", "RATE_LIMITED", headers=RETRY_AFTER),
    "503": _error("The database is unreachable", "DATABASE_UNAVAILABLE", headers=RETRY_AFTER),
}

JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "The job's UUID",
    "schema": {"type": "string"},
}

BY_ID = {
    "400": _error("The job id is not a UUID", "INVALID_JOB_ID"),
    "403": _error("The job belongs to someone else", "FORBIDDEN"),
    "404": _error("No such job", "JOB_NOT_FOUND"),
}


def _schemas() -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    nullable_ts = {"type": ["string", "null"], "format": "date-time"}
    return {
        **job_schemas(),
        **kind_schemas(),
        **key_schemas(),
        **admin.schemas(),
        **me.schemas(),
        "Error": {
            "type": "object",
            "required": ["status", "code", "message", "timestamp"],
            "properties": {
                "status": {"const": "error"},
                "code": {"type": "string", "description": "Stable, machine-readable"},
                "message": {"type": "string", "description": "Safe to show to the user"},
                "timestamp": timestamp,
                "field": {"type": ["string", "null"], "description": "The input at fault"},
                "expired_at": {**nullable_ts, "description": "PACKAGE_EXPIRED: when"},
            },
        },
        "CreateJob": {
            "type": "object",
            "required": ["kind"],
            "additionalProperties": False,
            "properties": {
                "kind": {
                    "type": "string",
                    "description": "An export kind the server knows: GET /api/v1/kinds lists them",
                },
                "params": {
                    "type": "object",
                    "description": (
                        "The parameters the kind declares (GET /api/v1/kinds: their types,"
                        " which are required, their defaults); unknown names are refused"
                    ),
                },
                "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "delay_seconds": {"type": "number", "minimum": 0, "maximum": MAX_DELAY_SECONDS},
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
                "notify_url": {
                    "type": "string",
                    "format": "uri",
                    "maxLength": 2048,
                    "description": (
                        "Webhook endpoint for this job's events (http or https, no"
                        " credentials); accepted only when its host is in the server's"
                        " EXPORTD_WEBHOOK_ALLOWED_HOSTS, else 400 VALIDATION_ERROR"
                    ),
                },
            },
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict: callers may not share mutations)."""
    # A JWT or an API key (exk_…: as the bearer credential, or in X-API-Key).
    secured: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    download_headers = {
        name: {"schema": {"type": "string"}}
        for name in (
            "Content-Disposition",
            "Content-Length",
            "Accept-Ranges",
            "ETag",
            "Last-Modified",
            "Cache-Control",
            "X-Package-Size",
        )
    }
    download_errors = {
        "400": BY_ID["400"],
        "403": _error("The job belongs to someone else", "DOWNLOAD_UNAUTHORIZED"),
        "404": _error("No such job, or not completed yet", "JOB_NOT_FOUND", "PACKAGE_NOT_READY"),
        "410": _error("The package expired and was deleted", "PACKAGE_EXPIRED"),
        "416": _error(
            "The range lies outside the package",
            "RANGE_NOT_SATISFIABLE",
            headers={"Content-Range": {"schema": {"type": "string"}, "example": "bytes */1234"}},
        ),
        **COMMON,
        "503": _error(
            "The database or the package storage cannot be reached",
            "DATABASE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
            headers=RETRY_AFTER,
        ),
    }
    download_parameters = [
        JOB_ID,
        {
            "name": "Range",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "bytes=START-END[,…]; more than 16 ranges: the whole file (200)",
        },
        {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"}},
    ]
    download_ok = {
        "200": {
            "description": "The whole package",
            "headers": download_headers,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        },
        "206": {
            "description": "One range, or several as multipart/byteranges",
            "headers": {**download_headers, "Content-Range": {"schema": {"type": "string"}}},
            "content": {
                "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                "multipart/byteranges": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "302": {
            "description": (
                "With S3 storage (EXPORTD_S3_DOWNLOAD=redirect, the default): fetch the bytes,"
                " Range and resume included, from the presigned URL in Location, valid"
                " EXPORTD_S3_URL_TTL seconds"
            ),
            "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
        },
    }
    link_errors = {
        "403": _error("Not a link this server signed, or its package was replaced", "LINK_INVALID"),
        "404": _error("The job is not completed", "PACKAGE_NOT_READY"),
        "410": _error("The link or the package expired", "LINK_EXPIRED", "PACKAGE_EXPIRED"),
        "416": download_errors["416"],
        "429": COMMON["429"],
        "503": download_errors["503"],
    }
    token_parameter = {
        "name": "token",
        "in": "path",
        "required": True,
        "schema": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]+[.][A-Za-z0-9_-]+$",
            "maxLength": MAX_TOKEN_LENGTH,
        },
        "description": "The signed token of a link made by POST /api/v1/jobs/{job_id}/links",
    }
    link_parameters = [token_parameter, *download_parameters[1:]]
    links_paths = {
        "/api/v1/jobs/{job_id}/links": {
            "post": {
                "operationId": "createLink",
                "summary": "A signed download link a browser can follow without a header",
                "security": secured,
                "parameters": [JOB_ID],
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "expires_in": {
                                        "type": "integer",
                                        "minimum": 60,
                                        "maximum": 365 * 24 * 3600,
                                        "default": 3600,
                                        "description": "seconds; never past the package's expiry",
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "The link",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["data"],
                                    "properties": {
                                        "data": {
                                            "type": "object",
                                            "required": ["url", "expires_at"],
                                            "properties": {
                                                "url": {"type": "string", "format": "uri"},
                                                "expires_at": {
                                                    "type": "string",
                                                    "format": "date-time",
                                                },
                                            },
                                        }
                                    },
                                }
                            }
                        },
                    },
                    **BY_ID,
                    "404": download_errors["404"],
                    "410": download_errors["410"],
                    "413": _error("The body is too large", "PAYLOAD_TOO_LARGE"),
                    **COMMON,
                },
            }
        },
        "/api/v1/links/{token}": {
            "get": {
                "operationId": "followLink",
                "summary": "The package, as the download endpoint serves it, for a signed link",
                "security": [],
                "parameters": link_parameters,
                "responses": {**download_ok, **link_errors},
            },
            "head": {
                "operationId": "headLink",
                "summary": "The link's download headers without the body",
                "security": [],
                "parameters": link_parameters,
                "responses": {
                    "200": {"description": "Headers of the whole package"},
                    "206": {"description": "Headers of the range"},
                    "302": {"description": "With S3 storage: the presigned URL in Location"},
                    **{k: {"description": v["description"]} for k, v in link_errors.items()},
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "exportd",
            "version": __version__,
            "description": "Export jobs: create, follow, cancel, retry, download (docs/api.md).",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A JWT, or an API key (exk_…)",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": _schemas(),
        },
        "paths": {
            "/api/v1/jobs": {
                "post": {
                    "operationId": "createJob",
                    "summary": "Create an export job",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {JSON: {"schema": _ref("CreateJob")}},
                    },
                    "responses": {
                        "202": {
                            **_job("Created; Location names the job"),
                            "headers": {"Location": {"schema": {"type": "string"}}},
                        },
                        "200": _job("Replay of an Idempotency-Key with the same body"),
                        "400": _error("Unknown kind, bad params, bad JSON", "VALIDATION_ERROR"),
                        "409": _error("Same Idempotency-Key, other body", "IDEMPOTENCY_CONFLICT"),
                        "413": _error("Body larger than 64 KiB", "PAYLOAD_TOO_LARGE"),
                        **COMMON,
                        "429": _error(
                            "Too many requests for this subject, or too many of the owner's"
                            " exports waiting to run (EXPORTD_OWNER_MAX_PENDING)",
                            "RATE_LIMITED",
                            "TOO_MANY_EXPORTS",
                            headers=RETRY_AFTER,
                        ),
                    },
                },
                "get": {
                    "operationId": "listJobs",
                    "summary": "The caller's jobs, newest first (admins: everyone's)",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"enum": [s.value for s in JobStatus]},
                        },
                        {"name": "kind", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "next_cursor of the previous page (opaque)",
                        },
                        {
                            "name": "owner",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "Admins only: one owner's jobs",
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "One page",
                            "content": {
                                JSON: {
                                    "schema": {
                                        "type": "object",
                                        "required": ["data", "next_cursor"],
                                        "properties": {
                                            "data": {"type": "array", "items": _ref("Job")},
                                            "next_cursor": {"type": ["string", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        "400": _error("Bad filter, limit or cursor", "VALIDATION_ERROR"),
                        "403": _error("owner= is for admins", "FORBIDDEN"),
                        **COMMON,
                    },
                },
            },
            "/api/v1/jobs/{job_id}": {
                "get": {
                    "operationId": "getJob",
                    "summary": "One job: status, progress, package",
                    "security": secured,
                    "parameters": [JOB_ID],
                    "responses": {"200": _job("The job"), **BY_ID, **COMMON},
                }
            },
            "/api/v1/jobs/{job_id}/retry": {
                "post": {
                    "operationId": "retryJob",
                    "summary": "Run a failed, rolled back, cancelled or expired job again",
                    "security": secured,
                    "parameters": [JOB_ID],
                    "responses": {
                        "200": _job("The job, pending again"),
                        **BY_ID,
                        "409": _error("Not in a retryable state", "JOB_NOT_RETRYABLE"),
                        **COMMON,
                    },
                }
            },
            "/api/v1/jobs/{job_id}/cancel": {
                "post": {
                    "operationId": "cancelJob",
                    "summary": "Cancel a pending or running job",
                    "security": secured,
                    "parameters": [JOB_ID],
                    "responses": {
                        "202": _job("The job, cancelling or cancelled"),
                        **BY_ID,
                        "409": _error("Already finished", "JOB_NOT_CANCELLABLE"),
                        **COMMON,
                    },
                }
            },
            "/api/v1/jobs/{job_id}/download": {
                "get": {
                    "operationId": "downloadPackage",
                    "summary": "The package (.tar.gz), resumable with Range",
                    "security": secured,
                    "parameters": download_parameters,
                    "responses": {**download_ok, **download_errors},
                },
                "head": {
                    "operationId": "headPackage",
                    "summary": "The download's headers without the body",
                    "security": secured,
                    "parameters": download_parameters,
                    "responses": {
                        "200": {"description": "Headers of the whole package"},
                        "206": {"description": "Headers of the range"},
                        **{
                            k: {"description": v["description"]} for k, v in download_errors.items()
                        },
                    },
                },
            },
            **links_paths,
            "/api/v1/jobs/{job_id}/events": {
                "get": {
                    "operationId": "jobEvents",
                    "summary": "Server-Sent Events: status and progress until a final status",
                    "security": secured,
                    "parameters": [JOB_ID],
                    "responses": {
                        "200": {
                            "description": (
                                "event: status|progress, data: JSON; a ': keep-alive' comment"
                                " every 15 s; the stream ends after a final status"
                            ),
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **BY_ID,
                        **COMMON,
                    },
                }
            },
            "/api/v1/kinds": {
                "get": {
                    "operationId": "listKinds",
                    "summary": "The export kinds this server knows, with their parameters",
                    "security": secured,
                    "responses": {
                        "200": {
                            "description": "Every kind, by name",
                            "content": {
                                JSON: {
                                    "schema": {
                                        "type": "object",
                                        "required": ["data"],
                                        "properties": {
                                            "data": {"type": "array", "items": _ref("Kind")},
                                        },
                                    }
                                }
                            },
                        },
                        # From the process's own registry: no database, except
                        # to check an API key (503 while it cannot be read).
                        **COMMON,
                    },
                }
            },
            **_admin_key_paths(secured),
            **_admin_kind_paths(secured),
            **admin.openapi_paths(secured, COMMON, _error),
            **me.openapi_paths(secured, COMMON),
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The process answers",
                    "responses": {"200": {"description": "Alive"}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "The database answers and its schema is current",
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": {"description": "Database down or migrations pending"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics of this process",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {JSON: {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }


def _admin_key_paths(secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    """/api/v1/admin/keys: admins only (a JWT with the admin role, or an admin key)."""
    not_admin = _error("Only admins may manage API keys", "FORBIDDEN")

    def one(schema: str, description: str) -> dict[str, Any]:
        body = {"type": "object", "required": ["data"], "properties": {"data": _ref(schema)}}
        return {"description": description, "content": {JSON: {"schema": body}}}

    return {
        "/api/v1/admin/keys": {
            "get": {
                "operationId": "listApiKeys",
                "summary": "Every API key (never the key itself), newest first",
                "security": secured,
                "parameters": [
                    {
                        "name": "owner",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "Only the keys acting as this subject",
                    }
                ],
                "responses": {
                    "200": {
                        "description": "All of them: one page",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["data", "next_cursor"],
                                    "properties": {
                                        "data": {"type": "array", "items": _ref("ApiKey")},
                                        "next_cursor": {"type": "null"},
                                    },
                                }
                            }
                        },
                    },
                    "400": _error("Unknown parameter or bad owner", "VALIDATION_ERROR"),
                    "403": not_admin,
                    **COMMON,
                },
            },
            "post": {
                "operationId": "createApiKey",
                "summary": "Make an API key; the answer is the only place the key appears",
                "security": secured,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("CreateApiKey")}},
                },
                "responses": {
                    "201": {
                        **one("NewApiKey", "Created; `key` is shown this once"),
                        "headers": {"Cache-Control": {"schema": {"const": "no-store"}}},
                    },
                    "400": _error("Bad owner, name, expiry or rate limit", "VALIDATION_ERROR"),
                    "403": not_admin,
                    "413": _error("Body larger than 64 KiB", "PAYLOAD_TOO_LARGE"),
                    **COMMON,
                },
            },
        },
        "/api/v1/admin/keys/{prefix}/revoke": {
            "post": {
                "operationId": "revokeApiKey",
                "summary": "Revoke a key: every API process refuses it within seconds",
                "security": secured,
                "parameters": [
                    {
                        "name": "prefix",
                        "in": "path",
                        "required": True,
                        "description": "The key's public prefix (with or without exk_)",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": one("ApiKey", "The key, revoked (again: unchanged)"),
                    "400": _error("Not a key prefix", "VALIDATION_ERROR"),
                    "403": not_admin,
                    "404": _error("No key has this prefix", "KEY_NOT_FOUND"),
                    **COMMON,
                },
            }
        },
    }


def _admin_kind_paths(secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    """/api/v1/admin/kinds/{kind}/pause|resume: admins only (DESIGN §13)."""
    kind = {
        "name": "kind",
        "in": "path",
        "required": True,
        "description": "A kind this server knows (GET /api/v1/kinds)",
        "schema": {"type": "string"},
    }
    answer = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": _ref("Kind")},
    }

    def operation(operation_id: str, summary: str, done: str) -> dict[str, Any]:
        return {
            "post": {
                "operationId": operation_id,
                "summary": summary,
                "security": secured,
                "parameters": [kind],
                "responses": {
                    "200": {"description": done, "content": {JSON: {"schema": answer}}},
                    "403": _error("Only admins may pause or resume kinds", "FORBIDDEN"),
                    "404": _error("No kind has this name", "KIND_NOT_FOUND"),
                    **COMMON,
                },
            }
        }

    return {
        "/api/v1/admin/kinds/{kind}/pause": operation(
            "pauseKind",
            "Hold a kind: its pending jobs wait on every worker, running ones finish",
            "The kind, paused (pausing it again changes nothing)",
        ),
        "/api/v1/admin/kinds/{kind}/resume": operation(
            "resumeKind",
            "Let a paused kind's jobs run again, at once",
            "The kind, not paused (resuming it again changes nothing)",
        ),
    }


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(document())
