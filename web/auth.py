"""Bearer JWT authentication (PyJWT), with algorithms pinned by configuration.

The accepted algorithms come from EXPORTD_JWT_ALGORITHMS (HS* with the
secret, RS/ES/PS with the public key file), never from the token's header,
so `alg: none` and key confusion are refused by construction. `exp` and `sub`
are required; `iss`/`aud` are checked when configured; tokens with `crit`
extensions are refused (we understand none). Admins are subjects whose role
claim equals `admin`.

The subject is bounded here, once (`check_subject`): it becomes `owner_id`
in rows, index keys, rate limit keys and `owner=` filters, so every later
use can rely on 1-255 characters of text without control characters.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request

from daemon.config import Settings
from daemon.errors import ConfigError
from daemon.tokens import load_secret
from web.errors import ApiError

LEEWAY_SECONDS = 30
MAX_TOKEN_BYTES = 8192
# The longest subject (characters): owner= filters accept the same, and at 4
# bytes a character its index key stays far below btree's 2704-byte limit.
MAX_SUBJECT = 255
# Unicode categories a subject may not contain: control characters (NUL
# included) and surrogates (a lone "\ud800" is not text; PostgreSQL refuses it).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})


@dataclass(frozen=True)
class Principal:
    subject: str
    admin: bool


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.jwt_public_key is not None:
            self.key: Any = settings.jwt_public_key
        else:
            secret = load_secret(settings)
            if secret is None:
                raise ConfigError(
                    "EXPORTD_JWT_SECRET",
                    "not set: the API refuses to start without a way to verify tokens",
                )
            self.key = secret
        self.algorithms = list(settings.jwt_algorithms)

    def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise _unauthorized("token too large")
        try:
            header = jwt.get_unverified_header(token)
            if "crit" in header:
                raise _unauthorized("unsupported critical header parameters")
            claims = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                options={"require": ["exp", "sub"]},
                issuer=self.settings.jwt_issuer,
                audience=self.settings.jwt_audience,
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token expired") from None
        except jwt.PyJWTError:
            raise _unauthorized("invalid token") from None
        subject = check_subject(claims.get("sub"))
        return Principal(subject, claims.get(self.settings.jwt_role_claim) == "admin")

    def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("a bearer token is required")
        return self.verify(token.strip())


def check_subject(subject: object) -> str:
    """The token's `sub` if it can own jobs: a string of 1 to MAX_SUBJECT
    characters without control characters or surrogates; else 401."""
    if not isinstance(subject, str) or not subject:
        raise _unauthorized("the token's subject (sub) must be a non-empty string")
    if len(subject) > MAX_SUBJECT:
        raise _unauthorized(f"the token's subject (sub) may be at most {MAX_SUBJECT} characters")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in subject):
        raise _unauthorized(
            "the token's subject (sub) must not contain control characters or lone surrogates"
        )
    return subject


def _unauthorized(reason: str) -> ApiError:
    return ApiError(
        401,
        "UNAUTHORIZED",
        reason,
        headers={"WWW-Authenticate": 'Bearer realm="exportd", error="invalid_token"'},
    )
