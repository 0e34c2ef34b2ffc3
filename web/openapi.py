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
from daemon.models import JobStatus
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
        "Missing, malformed, expired or wrongly signed token",
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
            },
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict: callers may not share mutations)."""
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
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
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
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
                        # From the process's own registry: no database, so no 503.
                        "401": COMMON["401"],
                        "429": COMMON["429"],
                    },
                }
            },
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


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(document())
