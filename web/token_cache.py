"""Tokens this process verified recently, so a client polling a job's status
pays for its JWT's signature check once, not on every request.

Verifying an HS256 token with PyJWT (header parse, base64, HMAC, claim
checks) was a tenth of the CPU of `GET /api/v1/jobs/{id}`; a client sends the
same token again and again until it expires. What is kept, and why it is safe:

- only successes: a refused token (bad signature, expired, wrong audience,
  issuer or algorithm, a `crit` header, a bad subject) is never remembered,
  so it is checked in full, and refused, every time;
- the key is the SHA-256 of the whole token, never a subject: a token is
  only ever answered with the principal its own claims gave, so two tokens
  of one subject (one with the admin role, one without) never mix, and a
  token that differs in one byte is verified from scratch;
- an entry lasts until the token's `exp` (PyJWT requires one) and never
  longer than MAX_SECONDS: after that the token is verified again — and
  refused if it has expired. Tokens cannot be revoked (there is no list to
  consult), so nothing else can change a verified token's answer; the
  verifying key and the accepted algorithms, issuer and audience are fixed
  for the life of the process;
- at most MAX_ENTRIES tokens, the oldest dropped first: memory stays bounded
  whatever the clients send (token length is bounded before the lookup).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from web.auth import Principal

MAX_ENTRIES = 4096
MAX_SECONDS = 300.0


class VerifiedTokens:
    """Principals of tokens that passed verification, until their `exp`."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        max_seconds: float = MAX_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.max_seconds = max_seconds
        # Wall clock, like the tokens' `exp` (seconds since the epoch).
        self.clock = clock
        # Insertion-ordered: the first entry is the oldest.
        self._entries: dict[bytes, tuple[float, Principal]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Principal | None:
        """The principal `token` was verified as, if that is still valid."""
        key = _key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, principal = entry
        if self.clock() >= until:
            del self._entries[key]
            return None
        return principal

    def put(self, token: str, principal: Principal, expires_at: float) -> None:
        """Remember a token that was just verified; `expires_at`: its `exp`."""
        until = min(float(expires_at), self.clock() + self.max_seconds)
        key = _key(token)
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (until, principal)


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
