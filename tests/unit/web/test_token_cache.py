"""The cache of verified tokens (web/token_cache.py) never answers for a token
what full verification would refuse, nor mixes two tokens up."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from tests.api_helpers import SECRET, api_settings, token
from web.auth import Authenticator, Principal
from web.errors import ApiError
from web.token_cache import VerifiedTokens


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def refused(auth: Authenticator, value: str) -> str:
    with pytest.raises(ApiError) as caught:
        auth.verify(value)
    assert caught.value.status == 401
    return caught.value.message


def test_a_verified_token_is_answered_from_the_cache(tmp_path: Path) -> None:
    auth = Authenticator(api_settings(tmp_path))
    value = token("alice")
    assert auth.verify(value) == Principal("alice", False)
    assert len(auth.verified) == 1
    assert auth.verified.get(value) == Principal("alice", False)
    assert auth.verify(value) == Principal("alice", False)
    assert len(auth.verified) == 1


def test_an_expired_token_is_refused_even_if_cached(tmp_path: Path) -> None:
    """Verified while it was valid; its exp has passed since (past the leeway)."""
    auth = Authenticator(api_settings(tmp_path))
    exp = int(time.time()) - 120
    value = jwt.encode({"sub": "alice", "exp": exp}, SECRET, algorithm="HS256")
    clock = Clock(exp - 100)
    auth.verified = VerifiedTokens(clock=clock)
    auth.verified.put(value, Principal("alice", True), exp)
    assert auth.verified.get(value) == Principal("alice", True)  # then, it was valid
    clock.now = time.time()
    assert refused(auth, value) == "token expired"
    assert len(auth.verified) == 0


def test_an_entry_ends_at_the_tokens_exp(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    cache = VerifiedTokens(clock=clock, max_seconds=300)
    cache.put("a.b.c", Principal("alice", False), 1_000_010)
    clock.now = 1_000_009.9
    assert cache.get("a.b.c") == Principal("alice", False)
    clock.now = 1_000_010.0
    assert cache.get("a.b.c") is None
    # A long-lived token is verified again after max_seconds.
    cache.put("d.e.f", Principal("alice", False), 2_000_000)
    clock.now += 300
    assert cache.get("d.e.f") is None


def test_tokens_of_one_subject_are_not_confused(tmp_path: Path) -> None:
    auth = Authenticator(api_settings(tmp_path))
    admin, plain = token("alice", admin=True), token("alice")
    assert auth.verify(admin) == Principal("alice", True)
    assert auth.verify(plain) == Principal("alice", False)
    assert auth.verify(admin) == Principal("alice", True)
    assert auth.verify(plain) == Principal("alice", False)
    # The cached token with its signature changed: verified, and refused.
    head, body, signature = admin.split(".")
    forged = f"{head}.{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    assert refused(auth, forged) == "invalid token"
    # The cached token's claims with another signer: refused too.
    claims = jwt.decode(admin, SECRET, algorithms=["HS256"])
    assert refused(auth, jwt.encode(claims, "x" * 64, algorithm="HS256")) == "invalid token"


def test_refused_tokens_are_not_remembered(tmp_path: Path) -> None:
    auth = Authenticator(api_settings(tmp_path, jwt_audience="exportd"))
    no_audience = token("alice")
    for _ in range(2):
        refused(auth, no_audience)
    assert len(auth.verified) == 0
    assert auth.verify(token("alice", aud="exportd")) == Principal("alice", False)
    assert len(auth.verified) == 1


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    auth = Authenticator(api_settings(tmp_path))
    auth.verified = VerifiedTokens(max_entries=3)
    values = [token(f"user{n}") for n in range(5)]
    for value in values:
        auth.verify(value)
    assert len(auth.verified) == 3
    assert auth.verified.get(values[0]) is None  # the oldest went first
    assert auth.verified.get(values[4]) == Principal("user4", False)
    # Still verified in full when not cached.
    assert auth.verify(values[0]) == Principal("user0", False)
    assert len(auth.verified) == 3
