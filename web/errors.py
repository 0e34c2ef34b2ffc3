"""Every error the API answers, as one JSON shape (DESIGN §6):

    {"status": "error", "code": "PACKAGE_EXPIRED", "message": "…", "timestamp": "…Z"}

Domain errors from `daemon` are mapped here, in one place; anything
unexpected is logged with the request id and answered 500 INTERNAL_ERROR
without a trace, SQL or path.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from daemon.actions import NotCancellable, NotRetryable, RequestError
from daemon.errors import (
    ConstraintViolation,
    DatabaseUnavailable,
    ExportdError,
    IdempotencyConflict,
    JobNotFound,
    ParamError,
    TooManyExports,
    UnknownKind,
)

log = logging.getLogger(__name__)

# TOO_MANY_EXPORTS: an owner's queue empties at the pace of their exports,
# which the API cannot know; half a minute is a polite first retry.
TOO_MANY_EXPORTS_RETRY_SECONDS = 30


class ApiError(Exception):
    """An answer other than success: status code, error code, a safe message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "status": "error",
        "code": code,
        "message": message,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _from_exception(exc: Exception) -> ApiError | None:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, JobNotFound):
        return ApiError(404, "JOB_NOT_FOUND", "no such job")
    if isinstance(exc, UnknownKind):
        return ApiError(400, "VALIDATION_ERROR", str(exc), field="kind")
    if isinstance(exc, RequestError):  # before ParamError: it is one
        return ApiError(400, "VALIDATION_ERROR", str(exc), field=exc.field)
    if isinstance(exc, ParamError):
        # A kind's parameter is `params.NAME`, so it never reads as a field of
        # the body itself (a kind may declare a param called `priority`).
        field = "params" if exc.field == "*" else f"params.{exc.field}"
        return ApiError(400, "VALIDATION_ERROR", str(exc), field=field)
    if isinstance(exc, ConstraintViolation):
        # A value the database refused (too large for an index, out of a
        # column's range): the request's fault, and retrying will not help.
        return ApiError(400, "VALIDATION_ERROR", str(exc))
    if isinstance(exc, IdempotencyConflict):
        return ApiError(409, "IDEMPOTENCY_CONFLICT", str(exc))
    if isinstance(exc, NotRetryable):
        return ApiError(409, "JOB_NOT_RETRYABLE", str(exc))
    if isinstance(exc, NotCancellable):
        return ApiError(409, "JOB_NOT_CANCELLABLE", str(exc))
    if isinstance(exc, TooManyExports):
        return ApiError(
            429,
            "TOO_MANY_EXPORTS",
            f"{exc}; wait for some of yours to start",
            headers={"Retry-After": str(TOO_MANY_EXPORTS_RETRY_SECONDS)},
        )
    if isinstance(exc, DatabaseUnavailable):
        return ApiError(
            503,
            "DATABASE_UNAVAILABLE",
            "the database is not reachable; try again shortly",
            headers={"Retry-After": "5"},
        )
    return None


async def handle_exception(request: Request, exc: Exception) -> Response:
    known = _from_exception(exc)
    if known is not None:
        return error_response(known.status, known.code, known.message, known.headers, **known.extra)
    if isinstance(exc, ExportdError):
        log.warning("unmapped domain error: %s", exc, extra={"action": "api.error"})
        return error_response(400, "BAD_REQUEST", str(exc))
    log.exception(
        "unexpected error",
        extra={"action": "api.error", "request_id": request.headers.get("x-request-id")},
    )
    return error_response(500, "INTERNAL_ERROR", "unexpected error; it has been logged")


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    code = codes.get(exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "ERROR")
    message = {404: "no such route", 405: "method not allowed on this route"}.get(
        exc.status_code, str(exc.detail)
    )
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))
