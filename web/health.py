"""/healthz (the process answers) and /readyz (the database answers and its
schema matches this code). Neither needs a token; /readyz never hangs: the
check has a deadline and any failure is a 503."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse

from daemon.db.migrations import schema_is_current
from web.context import api_context

READY_TIMEOUT_SECONDS = 3.0


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    ctx = api_context(request)
    try:
        current = await asyncio.wait_for(
            asyncio.to_thread(schema_is_current, ctx.database_url), timeout=READY_TIMEOUT_SECONDS
        )
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    if not current:
        return JSONResponse(
            {"status": "unavailable", "database": "migrations pending"}, status_code=503
        )
    return JSONResponse({"status": "ok"})
