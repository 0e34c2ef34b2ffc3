"""Test helpers for the HTTP API: the real app over httpx (ASGI, lifespan run),
tokens signed with the test secret."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import uvicorn
from starlette.applications import Starlette

from daemon.config import Settings
from daemon.kinds.registry import KindRegistry
from tests.helpers import fast_settings, kinds_registry
from web.app import create_app

SECRET = "test-secret-that-is-long-enough-for-hs256-and-hs512-0123456789abcdef"


def api_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"jwt_secret": SECRET, "rate_limit": None, **overrides}
    return replace(fast_settings(tmp_path), **values)


def token(sub: str = "alice", *, admin: bool = False, ttl: int = 3600, **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
    if admin:
        body["role"] = "admin"
    return jwt.encode(body, SECRET, algorithm="HS256")


def bearer(sub: str = "alice", *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, admin=admin)}"}


@asynccontextmanager
async def api_client(
    settings: Settings, db_url: str, registry: KindRegistry | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """httpx against the real Starlette app (no server; lifespan started)."""
    app = create_app(settings, db_url, registry or kinds_registry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://exportd.test") as client:
            yield client


@asynccontextmanager
async def live_app(
    settings: Settings, db_url: str, registry: KindRegistry | None = None
) -> AsyncIterator[tuple[str, Starlette]]:
    """The real app under a real uvicorn on a free loopback port, in this loop."""
    app = create_app(settings, db_url, registry or kinds_registry())
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
