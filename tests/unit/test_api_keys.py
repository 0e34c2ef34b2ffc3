"""The shape of API keys and the rules around them, without a database."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from starlette.datastructures import Headers

from daemon import api_keys
from daemon.cli.keys import _ago
from daemon.db.keys import ApiKey
from web.auth import credential
from web.errors import ApiError


def test_keys_are_exk_and_52_base32_characters_of_32_random_bytes() -> None:
    made = {api_keys.generate_key() for _ in range(200)}
    assert len(made) == 200
    for key in made:
        assert key.startswith("exk_") and len(key) == 56
        assert base64.b32decode(key[4:].upper() + "====").__len__() == 32
        assert api_keys.key_prefix(key) == key[4:14]
    assert len({api_keys.key_prefix(k) for k in made}) == 200


@pytest.mark.parametrize(
    "text",
    ["", "exk_", "exk_" + "a" * 51, "exk_" + "a" * 53, "EXK_" + "a" * 52, "exk_" + "A" * 52,
     "exk_" + "8" * 52, " exk_" + "a" * 52, "exk_" + "a" * 52 + "\n"],
)  # fmt: skip
def test_anything_else_is_not_a_key(text: str) -> None:
    assert api_keys.key_prefix(text) is None


def test_prefixes_as_operators_type_them() -> None:
    assert api_keys.parse_prefix("abcdefgh23") == "abcdefgh23"
    assert api_keys.parse_prefix(" exk_abcdefgh23 ") == "abcdefgh23"
    for wrong in ("abcdefgh2", "abcdefgh234", "ABCDEFGH23", "exk_", "-abcdefgh2", ""):
        assert api_keys.parse_prefix(wrong) is None, wrong


def test_the_stored_digest_is_sha256_of_the_whole_key() -> None:
    key = api_keys.generate_key()
    assert api_keys.key_digest(key) == hashlib.sha256(key.encode()).digest()


@pytest.mark.parametrize(
    ("given", "stored"),
    [(None, None), ("600/minute", "600/minute"), ("5/Second", "5/second"), ("off", "off"),
     ("0", "off"), ("10/hour", "10/hour")],
)  # fmt: skip
def test_per_key_rate_limits(given: str | None, stored: str | None) -> None:
    assert api_keys.check_rate_limit(given) == stored


@pytest.mark.parametrize("given", ["fast", "10/day", "-1/minute", "1000000000/minute", "9" * 40])
def test_bad_per_key_rate_limits(given: str) -> None:
    with pytest.raises(api_keys.KeyRequestError) as refused:
        api_keys.check_rate_limit(given)
    assert refused.value.field == "rate_limit" and len(str(refused.value)) < 200


def test_describe_key_has_no_hash_and_says_the_state() -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    key = ApiKey(
        prefix="abcdefgh23",
        owner_id="svc",
        name="",
        admin=False,
        rate_limit=None,
        created_at=now - timedelta(days=2),
        last_used_at=None,
        expires_at=now - timedelta(seconds=1),
        revoked_at=None,
    )
    described = api_keys.describe_key(key, now)
    assert described["state"] == "expired"
    assert described["created_at"] == "2026-11-21T10:00:00Z"
    assert not any("sha" in name or name == "key" for name in described)


def test_credentials_from_headers() -> None:
    key = api_keys.generate_key()
    assert credential(Headers({"x-api-key": key})) == ("key", key)
    assert credential(Headers({"authorization": f"Bearer {key}"})) == ("key", key)
    assert credential(Headers({"authorization": "bearer a.b.c"})) == ("jwt", "a.b.c")
    for headers in ({}, {"authorization": "Basic abc"}, {"x-api-key": key, "authorization": "x"}):
        with pytest.raises(ApiError) as refused:
            credential(Headers(headers))
        assert refused.value.status == 401


def test_the_first_of_repeated_credential_headers_counts() -> None:
    # As `Headers.get` reads them: the first one, whatever follows.
    key = api_keys.generate_key()
    tokens = [(b"authorization", b"Bearer a.b.c"), (b"authorization", b"Bearer d.e.f")]
    assert credential(Headers(raw=tokens)) == ("jwt", "a.b.c")
    keys = [(b"x-api-key", key.encode()), (b"x-api-key", b"exk_other")]
    assert credential(Headers(raw=keys)) == ("key", key)


def test_last_used_reads_as_an_age() -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    ages = [None, now, now - timedelta(minutes=5), now - timedelta(hours=3), now - timedelta(9)]
    assert [_ago(t, now) for t in ages] == [
        "never",
        "just now",
        "5 min ago",
        "3 h ago",
        "9 days ago",
    ]
