"""/healthz (the process answers) and /readyz (the database answers and its
schema matches this code). Neither needs a token; /readyz never hangs: the
check has a deadline and any failure is a 503."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse

from daemon.database import connect
from daemon.migrations import Migrator
from web.context import api_context

READY_TIMEOUT_SECONDS = 3.0


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _schema_current(url: str) -> bool:
    with connect(url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '2s'")
        return Migrator(conn).is_current()


async def readyz(request: Request) -> JSONResponse:
    ctx = api_context(request)
    try:
        current = await asyncio.wait_for(
            asyncio.to_thread(_schema_current, ctx.database_url), timeout=READY_TIMEOUT_SECONDS
        )
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    if not current:
        return JSONResponse(
            {"status": "unavailable", "database": "migrations pending"}, status_code=503
        )
    return JSONResponse({"status": "ok"})
