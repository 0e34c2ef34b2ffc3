"""Who may see a job: the job id of a route, and the owner-or-admin rule.

Every route that names a job goes through these, so no handler can show
one owner's job to another.
"""

from __future__ import annotations

from uuid import UUID

from starlette.requests import Request

from daemon.db import jobs as job_store
from daemon.models import Job
from web.auth import Principal
from web.context import ApiContext
from web.errors import ApiError


def parse_job_id(request: Request) -> UUID:
    raw = request.path_params["job_id"]
    try:
        return UUID(raw)
    except ValueError:
        raise ApiError(400, "INVALID_JOB_ID", "the job id must be a UUID") from None


def check_visible(job: Job, principal: Principal, *, code: str = "FORBIDDEN") -> None:
    if not principal.admin and job.owner_id != principal.subject:
        raise ApiError(403, code, "this job belongs to someone else")


async def visible_job(ctx: ApiContext, request: Request, principal: Principal) -> Job:
    job_id = parse_job_id(request)
    async with ctx.connection() as conn:
        job = await job_store.get_job(conn, job_id)
    check_visible(job, principal)
    return job
