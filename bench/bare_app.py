"""The baseline of the API benchmark: a bare Starlette route under the same
uvicorn settings as `exportd web`, answering a job-sized JSON document with
no token check and no database."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

JOB = {
    "data": {
        "job_id": "5f56012f-74cd-4e3a-97a4-38cb08b41b81",
        "kind": "orders",
        "status": "completed",
        "owner_id": "bench",
        "params": {},
        "priority": 0,
        "attempts": 1,
        "max_attempts": 3,
        "progress": {
            "steps_completed": 2,
            "steps_total": 2,
            "current_step": None,
            "percentage": 100,
        },
        "result": None,
        "error_message": None,
        "package": None,
        "scheduled_at": "2026-11-23T10:00:00Z",
        "created_at": "2026-11-23T10:00:00Z",
        "updated_at": "2026-11-23T10:00:01Z",
        "started_at": "2026-11-23T10:00:00Z",
        "completed_at": "2026-11-23T10:00:01Z",
    }
}


async def job(request: Request) -> JSONResponse:
    return JSONResponse(JOB)


app = Starlette(routes=[Route("/api/v1/jobs/{job_id}", job)])
