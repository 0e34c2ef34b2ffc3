"""Authentication: a bearer JWT (PyJWT, algorithms pinned by configuration)
or an API key (`exk_…`, as a bearer credential or in `X-API-Key`).

The accepted algorithms come from EXPORTD_JWT_ALGORITHMS (HS* with the
secret, RS/ES/PS with the public key file), never from the token's header,
so `alg: none` and key confusion are refused by construction. `exp` and `sub`
are required; `iss`/`aud` are checked when configured; tokens with `crit`
extensions are refused (we understand none). Admins are subjects whose role
claim equals `admin`.

The subject is bounded here, once (`check_subject`): it becomes `owner_id`
in rows, index keys, rate limit keys and `owner=` filters, so every later
use can rely on 1-255 characters of text without control characters.

API keys are checked against the database, so before the route runs:
`web.key_auth.KeyAuthMiddleware` verifies a key and leaves the outcome in
the request's scope (KEY_OUTCOME); `authenticate` hands it on. A key acts
as its owner: the owner is the principal's subject, like a token's `sub`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jwt
from starlette.datastructures import Headers
from starlette.requests import Request

from daemon.api_keys import KEY_MARK
from daemon.config import Settings
from daemon.errors import ConfigError
from daemon.subjects import MAX_SUBJECT as MAX_SUBJECT
from daemon.subjects import subject_problem
from daemon.tokens import load_secret
from web.errors import ApiError
from web.token_cache import VerifiedTokens

LEEWAY_SECONDS = 30
MAX_TOKEN_BYTES = 8192
API_KEY_HEADER = "x-api-key"
# Where KeyAuthMiddleware leaves, in the ASGI scope, the Principal of a
# verified key or the exception that refused it.
KEY_OUTCOME = "exportd.api_key"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the subject owns jobs; admins see everyone's."""

    subject: str
    admin: bool
    # With an API key: its prefix, and its own rate limit ('600/minute' or
    # 'off'); None shares the subject's limit (EXPORTD_RATE_LIMIT).
    key_prefix: str | None = None
    key_rate_limit: str | None = None


def credential(headers: Headers) -> tuple[Literal["jwt", "key"], str]:
    """The one credential a request carries: ("jwt", token) or ("key", key).

    An API key comes in `X-API-Key`, or as the bearer credential (it starts
    with `exk_`, which no JWT does). Both headers at once are refused: a
    request acts as one principal, and which one must not be a guess.
    """
    api_key = headers.get(API_KEY_HEADER)
    authorization = headers.get("authorization")
    if api_key is not None and authorization is not None:
        raise unauthorized("send either an Authorization header or X-API-Key, not both")
    if api_key is not None:
        return "key", api_key.strip()
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("a bearer token or an API key is required")
    return ("key" if token.startswith(KEY_MARK) else "jwt"), token


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
        # Tokens verified recently (web/token_cache.py: successes only, until `exp`).
        self.verified = VerifiedTokens()

    def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise unauthorized("token too large")
        known = self.verified.get(token)
        if known is not None:
            return known
        try:
            header = jwt.get_unverified_header(token)
            if "crit" in header:
                raise unauthorized("unsupported critical header parameters")
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
            raise unauthorized("token expired") from None
        except jwt.PyJWTError:
            raise unauthorized("invalid token") from None
        subject = check_subject(claims.get("sub"))
        principal = Principal(subject, claims.get(self.settings.jwt_role_claim) == "admin")
        try:
            expires_at = int(claims["exp"])  # as PyJWT read it when checking it
        except (KeyError, TypeError, ValueError):
            return principal  # cannot happen (exp is required); then not remembered
        self.verified.put(token, principal, expires_at)
        return principal

    def authenticate(self, request: Request) -> Principal:
        kind, value = credential(request.headers)
        if kind == "jwt":
            return self.verify(value)
        outcome = request.scope.get(KEY_OUTCOME)
        if isinstance(outcome, Principal):
            return outcome
        if isinstance(outcome, Exception):
            raise outcome  # refused, or the database could not be asked (503)
        # No middleware looked at the key (an app built without it): refuse.
        raise unauthorized("API keys are not accepted here")


def check_subject(subject: object) -> str:
    """The token's `sub` if it can own jobs (`daemon.subjects`: a string of 1
    to MAX_SUBJECT characters without control characters or surrogates); else 401."""
    problem = subject_problem(subject)
    if problem is not None:
        raise unauthorized(f"the token's subject (sub) {problem}")
    assert isinstance(subject, str)
    return subject


def unauthorized(reason: str) -> ApiError:
    """401 UNAUTHORIZED with the WWW-Authenticate header RFC 6750 asks for."""
    return ApiError(
        401,
        "UNAUTHORIZED",
        reason,
        headers={"WWW-Authenticate": 'Bearer realm="exportd", error="invalid_token"'},
    )
