"""Signed download links (DESIGN §11): a browser's Download button.

`POST /api/v1/jobs/{id}/links` (owner or admin) hands out an absolute URL,
`EXPORTD_PUBLIC_URL/api/v1/links/{token}`, valid `expires_in` seconds
(default 3600, at least 60, never past the package's own expiry).
`GET`/`HEAD /api/v1/links/{token}` needs no Authorization header and answers
exactly like the download endpoint (`package_download.serve`), as the subject
who created the link. The token is signed, stateless (`daemon.links`) and
checked in this order, so each answer tells the truth:

1. not a token this server signed (tampered, truncated, foreign) → 403 LINK_INVALID;
2. the job's package is not the one the link was made for (re-exported) → 403 LINK_INVALID;
3. past the link's own expiry → 410 LINK_EXPIRED;
4. the package expired or was deleted → 410 PACKAGE_EXPIRED (as a download).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from daemon import links
from daemon.db import jobs as job_store
from daemon.errors import JobNotFound
from web.access import check_visible, parse_job_id
from web.context import api_context
from web.errors import ApiError
from web.job_json import API, iso
from web.jobs import read_json_body
from web.package_download import downloadable, serve

DEFAULT_EXPIRES_IN = 3600
MIN_EXPIRES_IN = 60
# A link outlives nothing: the package's expiry caps it anyway. This bound
# only keeps the number sane (a year).
MAX_EXPIRES_IN = 365 * 24 * 3600


def _invalid() -> ApiError:
    return ApiError(403, "LINK_INVALID", "this download link is not valid")


def _expires_in(body: dict[str, Any]) -> int:
    unknown = set(body) - {"expires_in"}
    if unknown:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"unknown field {sorted(unknown)[0]!r}; allowed: expires_in",
            field=sorted(unknown)[0],
        )
    value = body.get("expires_in", DEFAULT_EXPIRES_IN)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(
            400, "VALIDATION_ERROR", "expires_in must be a whole number", field="expires_in"
        )
    if not MIN_EXPIRES_IN <= value <= MAX_EXPIRES_IN:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"expires_in must be between {MIN_EXPIRES_IN} and {MAX_EXPIRES_IN} seconds",
            field="expires_in",
        )
    return value


async def create_link(request: Request) -> Response:
    ctx = api_context(request)
    principal = ctx.principal(request)
    job_id = parse_job_id(request)
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    body = await read_json_body(request) if has_body else {}
    expires_in = _expires_in(body)
    async with ctx.connection() as conn:
        job = await job_store.get_job(conn, job_id)
    check_visible(job, principal)
    now = datetime.now(UTC)
    downloadable(job, now)
    assert job.package_sha256 is not None  # a completed job's package has one
    expires_at = int(now.timestamp()) + expires_in
    if job.package_expires_at is not None:
        expires_at = min(expires_at, int(job.package_expires_at.timestamp()))
    try:
        token = links.sign(
            ctx.link_secret,
            links.Link(job.job_id, job.package_sha256, expires_at, principal.subject),
        )
    except ValueError as exc:
        raise ApiError(400, "VALIDATION_ERROR", str(exc)) from None
    data = {
        "url": f"{ctx.settings.base_url}{API}/links/{token}",
        "expires_at": iso(datetime.fromtimestamp(expires_at, UTC)),
    }
    return JSONResponse({"data": data}, status_code=201, headers={"Cache-Control": "no-store"})


async def follow_link(request: Request) -> Response:
    ctx = api_context(request)
    try:
        link = links.verify(ctx.link_secret, request.path_params["token"])
    except links.LinkInvalid:
        raise _invalid() from None
    ctx.rate_limit(link.subject)
    async with ctx.connection() as conn:
        try:
            job = await job_store.get_job(conn, link.job_id)
        except JobNotFound:
            # A genuine link whose job was pruned: what it pointed to is gone.
            raise ApiError(
                410, "PACKAGE_EXPIRED", "the package has expired and was deleted"
            ) from None
    if job.package_sha256 != link.package_sha256:
        raise _invalid()
    if link.expires_at <= time.time():
        raise ApiError(
            410,
            "LINK_EXPIRED",
            "this download link has expired; ask for a new one",
            expired_at=iso(datetime.fromtimestamp(link.expires_at, UTC)),
        )
    return await serve(ctx, request, job, link.subject)
