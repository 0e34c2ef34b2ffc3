"""API key authentication: verifying `exk_…` keys against the database.

A key is found by its public prefix, then the SHA-256 of the key presented
is compared with the stored one by `hmac.compare_digest`, in constant time
for a given length. There is one such comparison for every well-formed key,
known prefix or not (an unknown prefix is compared with a hash no key has),
and no comparison of key text at all: how long a refusal takes says nothing
about how many leading characters were right.

What each process keeps, and why it is safe:

- a key's row (its hash, owner, role, limit, expiry, revocation), for
  CACHE_SECONDS at most, so most requests read no row; a revoked key is
  refused by every process within that time, and an expired one at once
  (the expiry is compared on every request). Rows whose prefix is unknown
  are cached the same way, so a stream of made-up keys does not become a
  stream of queries.
- when it last recorded a use of each key, so `last_used_at` is written at
  most once per TOUCH_INTERVAL_SECONDS per process, and the statement itself
  skips the write when any process wrote within that interval: no write per
  request, however many processes.

`KeyAuthMiddleware` runs the check before the route (handlers authenticate
synchronously, `ApiContext.principal`), only for `/api/v1` requests that
carry a key, and leaves the outcome in the scope (`web.auth.KEY_OUTCOME`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from daemon.api_keys import key_digest, key_prefix
from daemon.db import keys as key_store
from daemon.db.keys import TOUCH_INTERVAL_SECONDS, KeyCredential
from daemon.db.pools import Database
from daemon.errors import DatabaseUnavailable
from web.auth import KEY_OUTCOME, Principal, credential, unauthorized
from web.errors import ApiError
from web.job_json import API

log = logging.getLogger(__name__)

# How long a process trusts a key's row it read: the bound on how long a
# revoked key keeps working on a process that had just read it.
CACHE_SECONDS = 2.0
# Rows (known or unknown prefixes) a process keeps at most; beyond, stale
# ones are dropped, then all.
MAX_CACHED = 10_000
# Compared with when the prefix is unknown: the SHA-256 of no key (no key's
# text contains a NUL), so the comparison is made and always fails.
_NO_KEY_SHA256 = hashlib.sha256(b"\0exportd: no key has this prefix").digest()


@dataclass(frozen=True)
class _Cached:
    read_at: float  # on the verifier's clock
    credential: KeyCredential | None  # None: no key has this prefix


class KeyVerifier:
    """Checks API keys for one API process (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._touched: dict[str, float] = {}

    async def verify(self, key: str) -> Principal:
        """The principal `key` acts as; ApiError 401 when it may not act,
        DatabaseUnavailable when its row cannot be read."""
        prefix = key_prefix(key)
        if prefix is None:
            raise unauthorized("malformed API key (exk_ and 52 characters a-z, 2-7)")
        found = await self._credential(prefix)
        stored = found.key_sha256 if found is not None else _NO_KEY_SHA256
        if not hmac.compare_digest(key_digest(key), stored) or found is None:
            raise unauthorized("invalid API key")
        if found.revoked_at is not None:
            raise unauthorized("this API key has been revoked")
        if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
            raise unauthorized("this API key has expired")
        await self._touch(prefix)
        return Principal(
            found.owner_id, found.admin, key_prefix=prefix, key_rate_limit=found.rate_limit
        )

    def forget(self, prefix: str) -> None:
        """Drop a cached row (this process revoked the key: refuse it now)."""
        self._cache.pop(prefix, None)

    async def _credential(self, prefix: str) -> KeyCredential | None:
        now = self.clock()
        cached = self._cache.get(prefix)
        if cached is not None and now - cached.read_at < self.cache_seconds:
            return cached.credential
        async with self.database.connection() as conn:
            found = await key_store.credential(conn, prefix)
        if len(self._cache) >= MAX_CACHED:
            self._evict(now)
        self._cache[prefix] = _Cached(now, found)
        return found

    def _evict(self, now: float) -> None:
        for prefix in [p for p, c in self._cache.items() if now - c.read_at >= self.cache_seconds]:
            del self._cache[prefix]
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()

    async def _touch(self, prefix: str) -> None:
        """Record a use of the key, at most once per interval from this process."""
        now = self.clock()
        last = self._touched.get(prefix)
        if last is not None and now - last < TOUCH_INTERVAL_SECONDS:
            return
        self._touched[prefix] = now  # before the write: concurrent requests skip it
        try:
            async with self.database.connection() as conn:
                await key_store.touch_key(conn, prefix)
        except DatabaseUnavailable:
            # The key was verified; when it was last used is not worth a 503.
            log.warning(
                "could not record the use of API key %s", prefix, extra={"action": "api.key_touch"}
            )


class KeyAuthMiddleware:
    """Verifies the API key of an `/api/v1` request before its route runs.

    Pure ASGI (streaming responses pass through untouched). Requests with a
    JWT or no credential at all are left to the route's `principal()`.
    """

    def __init__(self, app: ASGIApp, verifier: KeyVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(f"{API}/"):
            try:
                kind, value = credential(Headers(scope=scope))
            except ApiError:
                kind, value = "jwt", ""  # the route refuses it, with the same error
            if kind == "key":
                outcome: Principal | Exception
                try:
                    outcome = await self.verifier.verify(value)
                except (ApiError, DatabaseUnavailable) as exc:
                    outcome = exc
                scope[KEY_OUTCOME] = outcome
        await self.app(scope, receive, send)
