"""What every request handler shares: settings, kinds, the pool, auth, limits.

One `ApiContext` per application, stored on `app.state.ctx`. `principal()`
authenticates and applies the per-subject rate limit in one call, so no
handler can forget either.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import Request

from daemon.config import Settings
from daemon.db.connect import Connection
from daemon.db.pools import Database
from daemon.kinds.registry import KindRegistry
from daemon.storage.local import PackageStorage
from web.auth import Authenticator, Principal
from web.errors import ApiError


@dataclass
class ApiContext:
    settings: Settings
    registry: KindRegistry
    database: Database
    auth: Authenticator
    storage: PackageStorage
    database_url: str
    # Seconds without an event after which an SSE stream sends a comment, so
    # proxies and clients keep the connection open.
    keepalive_seconds: float = 15.0
    limiter: MovingWindowRateLimiter = field(
        default_factory=lambda: MovingWindowRateLimiter(MemoryStorage())
    )

    def __post_init__(self) -> None:
        rate = self.settings.rate_limit
        self.limit: limits.RateLimitItem | None = None
        if rate is not None:
            per = {1.0: "second", 60.0: "minute", 3600.0: "hour"}[rate.period_seconds]
            self.limit = limits.parse(f"{rate.requests}/{per}")

    def principal(self, request: Request) -> Principal:
        principal = self.auth.authenticate(request)
        if self.limit is not None and not self.limiter.hit(self.limit, principal.subject):
            stats = self.limiter.get_window_stats(self.limit, principal.subject)
            retry = max(1, int(stats.reset_time - time.time()) + 1)
            raise ApiError(
                429,
                "RATE_LIMITED",
                f"too many requests; limit is {self.settings.rate_limit} per subject",
                headers={"Retry-After": str(retry)},
            )
        return principal

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled autocommit connection; DatabaseUnavailable when there is none."""
        async with self.database.connection() as conn:
            yield conn


def api_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx
