"""JWT: every bad token is a 401 with WWW-Authenticate, none is a 500."""

from __future__ import annotations

import base64
import hmac
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from daemon.errors import ConfigError
from tests.api_helpers import SECRET, api_client, api_settings, token
from tests.helpers import kinds_registry
from web.app import create_app

pytestmark = pytest.mark.anyio


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def now() -> int:
    return int(time.time())


def rsa_keys(tmp_path: Path) -> tuple[Any, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "jwt.pem"
    path.write_bytes(public)
    return key, path


BAD_TOKENS = {
    "alg none": b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": "a", "exp": 2**40}) + ".",
    "expired": jwt.encode({"sub": "a", "exp": 1000}, SECRET, algorithm="HS256"),
    "missing exp": jwt.encode({"sub": "a"}, SECRET, algorithm="HS256"),
    "missing sub": jwt.encode({"exp": 2**40}, SECRET, algorithm="HS256"),
    "empty sub": jwt.encode({"sub": "", "exp": 2**40}, SECRET, algorithm="HS256"),
    "numeric sub": jwt.encode({"sub": 5, "exp": 2**40}, SECRET, algorithm="HS256"),
    "wrong secret": jwt.encode({"sub": "a", "exp": 2**40}, "x" * 40, algorithm="HS256"),
    "wrong algorithm": jwt.encode({"sub": "a", "exp": 2**40}, SECRET, algorithm="HS512"),
    "future nbf": jwt.encode({"sub": "a", "exp": 2**40, "nbf": 2**39}, SECRET, algorithm="HS256"),
    "unknown crit": jwt.encode(
        {"sub": "a", "exp": 2**40}, SECRET, algorithm="HS256", headers={"crit": ["x-magic"]}
    ),
    "future iat": jwt.encode({"sub": "a", "exp": 2**40, "iat": 2**39}, SECRET, algorithm="HS256"),
    "16 KB header": jwt.encode(
        {"sub": "a", "exp": 2**40}, SECRET, algorithm="HS256", headers={"x-pad": "p" * 16384}
    ),
    "garbage": "not.a.jwt",
    "huge": "a" * 16384,
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_401(case: str, db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.get(
            "/api/v1/jobs", headers={"Authorization": f"Bearer {BAD_TOKENS[case]}"}
        )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    body = response.json()
    assert body["status"] == "error" and body["code"] == "UNAUTHORIZED"
    assert set(body) >= {"message", "timestamp"}


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic YTpi", "Token abc"])
async def test_missing_or_malformed_authorization(
    header: str | None, db_url: str, tmp_path: Path
) -> None:
    headers = {} if header is None else {"Authorization": header}
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.get("/api/v1/jobs", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"


async def test_issuer_and_audience_are_enforced_when_configured(
    db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(tmp_path, jwt_issuer="https://id.example", jwt_audience="exportd")
    good = token(iss="https://id.example", aud="exportd")
    async with api_client(settings, db_url) as client:
        for bad in (
            token(),
            token(iss="https://evil", aud="exportd"),
            token(iss="https://id.example", aud="x"),
        ):
            response = await client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {bad}"})
            assert response.status_code == 401
        response = await client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {good}"})
        assert response.status_code == 200


async def test_rs256_and_key_confusion(db_url: str, tmp_path: Path) -> None:
    key, public_path = rsa_keys(tmp_path)
    settings = replace(
        api_settings(tmp_path),
        jwt_secret=None,
        jwt_public_key_file=public_path,
        jwt_public_key=public_path.read_text(),
        jwt_algorithms=("RS256",),
        link_secret="a-link-secret-for-the-rs256-test-0123456789abcdef",
    )
    claims = {"sub": "alice", "exp": now() + 60}
    good = jwt.encode(claims, key, algorithm="RS256")
    # HS256 signed with the *public* key as the HMAC secret: the classic confusion
    signing_input = b64({"alg": "HS256", "typ": "JWT"}) + "." + b64(claims)
    mac = hmac.new(public_path.read_bytes(), signing_input.encode(), "sha256").digest()
    confused = signing_input + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    async with api_client(settings, db_url) as client:
        ok = await client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {good}"})
        bad = await client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {confused}"})
    assert ok.status_code == 200
    assert bad.status_code == 401


def test_the_api_refuses_to_start_without_a_secret(db_url: str, tmp_path: Path) -> None:
    settings = replace(api_settings(tmp_path), jwt_secret=None)
    with pytest.raises(ConfigError, match="EXPORTD_JWT_SECRET"):
        create_app(settings, db_url, kinds_registry())
