"""/api/v1/jobs: create, list, get, retry, cancel — and the job JSON."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from datetime import datetime
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse

from daemon.actions import ExportRequest, cancel_export, create_export, retry_export
from daemon.db import jobs as job_store
from daemon.kinds.pauses import waiting_on_pause
from daemon.models import Job, JobStatus
from web.access import visible_job
from web.auth import MAX_SUBJECT
from web.context import ApiContext, api_context
from web.errors import ApiError
from web.job_json import API, job_json

MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY = 255
BODY_FIELDS = {"kind", "params", "priority", "delay_seconds", "max_attempts", "notify_url"}


# -- create --------------------------------------------------------------------


async def read_json_body(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length", "")
    # A declared length beyond the limit is refused before reading; anything
    # else (absent, odd) is bounded while the body streams in.
    if declared.isascii() and declared.isdigit() and ascii_number(declared, MAX_BODY_BYTES) is None:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"the body may be at most {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(
                413, "PAYLOAD_TOO_LARGE", f"the body may be at most {MAX_BODY_BYTES} bytes"
            )
        chunks.append(chunk)
    try:
        body = json.loads(
            b"".join(chunks).decode("utf-8"), parse_constant=_no_constant, parse_float=_finite
        )
        # PostgreSQL's jsonb refuses lone surrogates ("\ud800"): refuse them here.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        raise ApiError(400, "VALIDATION_ERROR", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "VALIDATION_ERROR", "the body must be a JSON object")
    return body


def ascii_number(text: str, maximum: int) -> int | None:
    """`text` as an int when it is ASCII digits only and at most `maximum`.

    `str.isdigit` also accepts "²" and "①", which `int` refuses, and `int`
    refuses more than 4300 digits: checking the characters and the length
    first means odd input is a 400, never an exception.
    """
    if not text or len(text) > len(str(maximum)) or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= maximum else None


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's parser accepts them; jsonb does not)."""
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def export_request(body: dict[str, Any]) -> ExportRequest:
    unknown = sorted(set(body) - BODY_FIELDS)
    if unknown:
        raise ApiError(400, "VALIDATION_ERROR", f"unknown field {unknown[0]!r}", field=unknown[0])
    kind = body.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ApiError(400, "VALIDATION_ERROR", "kind is required", field="kind")
    params = body.get("params", {})
    if params is not None and not isinstance(params, dict):
        raise ApiError(400, "VALIDATION_ERROR", "params must be an object", field="params")
    return ExportRequest(
        kind=kind,
        params=params or {},
        priority=body.get("priority", 0),
        delay_seconds=body.get("delay_seconds", 0),
        max_attempts=body.get("max_attempts"),
        notify_url=body.get("notify_url"),
    )


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            field="Idempotency-Key",
        )
    return key


async def create_job(request: Request) -> JSONResponse:
    ctx = api_context(request)
    principal = ctx.principal(request)
    key = idempotency_key(request)
    export = export_request(await read_json_body(request))
    async with ctx.connection() as conn:
        job, created = await create_export(
            conn,
            ctx.registry,
            export,
            owner_id=principal.subject,
            idempotency_key=key,
            max_pending=ctx.settings.owner_max_pending or None,
            notify_hosts=ctx.settings.webhook_allowed_hosts,
        )
        paused = await waiting_on_pause(conn, [job])
    location = f"{API}/jobs/{job.job_id}"
    return JSONResponse(
        {"data": job_json(job, paused)},
        status_code=202 if created else 200,
        headers={"Location": location},
    )


# -- list ----------------------------------------------------------------------


def _cursor_key(ctx: ApiContext) -> bytes:
    return hashlib.sha256(b"exportd-cursor\0" + str(ctx.auth.key).encode()).digest()


def encode_cursor(ctx: ApiContext, job: Job) -> str:
    payload = f"{job.created_at.isoformat()}|{job.job_id}".encode()
    mac = hmac.new(_cursor_key(ctx), payload, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def decode_cursor(ctx: ApiContext, text: str) -> job_store.Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        mac, payload = raw[:16], raw[16:]
        expected = hmac.new(_cursor_key(ctx), payload, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            raise ValueError("bad signature")
        created, _, job_id = payload.decode().partition("|")
        return job_store.Cursor(datetime.fromisoformat(created), UUID(job_id))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "VALIDATION_ERROR", "invalid cursor", field="cursor") from None


async def list_jobs(request: Request) -> JSONResponse:
    ctx = api_context(request)
    principal = ctx.principal(request)
    query = request.query_params
    unknown = sorted(set(query) - {"status", "kind", "limit", "cursor", "owner"})
    if unknown:
        raise ApiError(
            400, "VALIDATION_ERROR", f"unknown parameter {unknown[0]!r}", field=unknown[0]
        )
    status = None
    if query.get("status"):
        try:
            status = JobStatus(query["status"])
        except ValueError:
            raise ApiError(400, "VALIDATION_ERROR", "unknown status", field="status") from None
    limit = ascii_number(query.get("limit", "50"), job_store.MAX_PAGE)
    if limit is None or limit < 1:
        raise ApiError(
            400, "VALIDATION_ERROR", f"limit must be 1-{job_store.MAX_PAGE}", field="limit"
        )
    # Admins see every owner's jobs, or one owner's with owner=; others their own.
    owner: str | None = None if principal.admin else principal.subject
    if "owner" in query:
        if not principal.admin and query["owner"] != principal.subject:
            raise ApiError(403, "FORBIDDEN", "only admins may list other owners' jobs")
        owner = query["owner"] or owner
    kind = query.get("kind") or None
    for name, value in (("kind", kind), ("owner", owner)):
        if value is not None and ("\x00" in value or len(value) > MAX_SUBJECT):
            raise ApiError(400, "VALIDATION_ERROR", f"invalid {name}", field=name)
    after = decode_cursor(ctx, query["cursor"]) if query.get("cursor") else None
    async with ctx.connection() as conn:
        jobs = await job_store.list_jobs(
            conn, owner_id=owner, status=status, kind=kind, after=after, limit=limit
        )
        paused = await waiting_on_pause(conn, jobs)
    next_cursor = encode_cursor(ctx, jobs[-1]) if len(jobs) == limit else None
    return JSONResponse({"data": [job_json(j, paused) for j in jobs], "next_cursor": next_cursor})


# -- one job -------------------------------------------------------------------


async def get_job(request: Request) -> JSONResponse:
    ctx = api_context(request)
    principal = ctx.principal(request)
    job = await visible_job(ctx, request, principal)
    paused: frozenset[str] = frozenset()
    if job.status is JobStatus.PENDING:
        async with ctx.connection() as conn:
            paused = await waiting_on_pause(conn, [job])
    return JSONResponse({"data": job_json(job, paused)})


async def retry_job(request: Request) -> JSONResponse:
    ctx = api_context(request)
    principal = ctx.principal(request)
    job = await visible_job(ctx, request, principal)
    async with ctx.connection() as conn:
        job = await retry_export(conn, ctx.registry, job.job_id)
        paused = await waiting_on_pause(conn, [job])
    return JSONResponse({"data": job_json(job, paused)})


async def cancel_job(request: Request) -> JSONResponse:
    ctx = api_context(request)
    principal = ctx.principal(request)
    job = await visible_job(ctx, request, principal)
    async with ctx.connection() as conn:
        job = await cancel_export(conn, job.job_id)
    return JSONResponse({"data": job_json(job)}, status_code=202)
