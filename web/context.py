"""What every request handler shares: settings, kinds, the pool, auth, limits.

One `ApiContext` per application, stored on `app.state.ctx`. `principal()`
authenticates and applies the per-subject rate limit in one call, so no
handler can forget either. The limit is per subject (EXPORTD_RATE_LIMIT): a JWT's `sub`,
or an API key's owner, so an owner's tokens and keys share one budget. A key
with its own limit (`exportd keys create --rate-limit`) has its own budget
instead, counted per key.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import limits
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.requests import Request

from daemon.config import Settings
from daemon.config_values import RateLimit, parse_rate_limit
from daemon.db.connect import Connection
from daemon.db.pools import Database
from daemon.kinds.registry import KindRegistry
from daemon.storage.backend import Storage
from web.auth import Authenticator, Principal
from web.errors import ApiError
from web.key_auth import KeyVerifier

# Prefixes the limiter's bucket of a key with its own limit. Subjects never
# contain control characters (daemon/subjects.py): no subject shares it.
_KEY_BUCKET = "\x00key "


def _limit_item(rate: RateLimit | None) -> limits.RateLimitItem | None:
    if rate is None:
        return None
    per = {1.0: "second", 60.0: "minute", 3600.0: "hour"}[rate.period_seconds]
    return limits.parse(f"{rate.requests}/{per}")


@dataclass
class ApiContext:
    settings: Settings
    registry: KindRegistry
    database: Database
    auth: Authenticator
    storage: Storage
    database_url: str
    # Signs and verifies download links (web/links.py).
    link_secret: str
    # Checks API keys (web/key_auth.py); the admin routes drop revoked ones.
    keys: KeyVerifier
    # Seconds without an event after which an SSE stream sends a comment, so
    # proxies and clients keep the connection open.
    keepalive_seconds: float = 15.0
    # A sliding window counter: two counts per bucket, O(1) per request. A
    # moving window keeps one timestamp per request in the window and counts
    # them on every hit: a key allowed 300,000/hour cost ~250 µs per request
    # and megabytes of memory per key.
    limiter: SlidingWindowCounterRateLimiter = field(
        default_factory=lambda: SlidingWindowCounterRateLimiter(MemoryStorage())
    )

    def __post_init__(self) -> None:
        self.limit = _limit_item(self.settings.rate_limit)
        # Keys' own limits as stored ('600/minute', 'off'), each parsed once.
        self._key_limits: dict[str, limits.RateLimitItem | None] = {}

    def principal(self, request: Request) -> Principal:
        principal = self.auth.authenticate(request)
        if principal.key_prefix is not None and principal.key_rate_limit is not None:
            self._rate_limit_key(principal.key_prefix, principal.key_rate_limit)
        else:
            self.rate_limit(principal.subject)
        return principal

    def _rate_limit_key(self, prefix: str, text: str) -> None:
        """Count one request of a key with its own limit ('600/minute', 'off')."""
        if text not in self._key_limits:
            self._key_limits[text] = _limit_item(parse_rate_limit(text))
        self._hit(self._key_limits[text], _KEY_BUCKET + prefix, f"{text} for this API key")

    def rate_limit(self, subject: str) -> None:
        """Count one request of `subject`; 429 RATE_LIMITED past the limit.
        Signed links are counted against the subject who created them."""
        self._hit(self.limit, subject, f"{self.settings.rate_limit} per subject")

    def _hit(self, limit: limits.RateLimitItem | None, bucket: str, described: str) -> None:
        """Count one request in `bucket`; 429 RATE_LIMITED with Retry-After past `limit`."""
        if limit is not None and not self.limiter.hit(limit, bucket):
            stats = self.limiter.get_window_stats(limit, bucket)
            retry = max(1, int(stats.reset_time - time.time()) + 1)
            raise ApiError(
                429,
                "RATE_LIMITED",
                f"too many requests; limit is {described}",
                headers={"Retry-After": str(retry)},
            )

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A pooled autocommit connection; DatabaseUnavailable when there is none."""
        return self.database.connection()


def api_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx
