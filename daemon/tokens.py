"""Development tokens: `exportd token` signs what `web` verifies; the secrets
`exportd up` generates and keeps in the data directory (JWT, signed links).

Only HMAC (HS256) tokens can be minted here, with `EXPORTD_JWT_SECRET` or the
secret `exportd up` generated in the data directory. Deployments using RS256
or ES256 mint tokens with their identity provider instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

import jwt

from daemon.config import Settings
from daemon.config_values import MIN_HMAC_SECRET_BYTES
from daemon.errors import ConfigError

_LINK_KEY_LABEL = b"exportd download-link key v1"


def load_secret(settings: Settings) -> str | None:
    """The configured JWT secret, else the one `up` keeps in the data directory."""
    if settings.jwt_secret:
        return settings.jwt_secret
    return _read_secret_file(settings.secret_file)


def ensure_secret(settings: Settings) -> str:
    """Return the JWT secret, generating and keeping one (mode 0600) on first use."""
    return load_secret(settings) or _write_secret_file(settings.secret_file)


def load_link_secret(settings: Settings) -> str:
    """The secret download links are signed with (DESIGN §11):
    `EXPORTD_LINK_SECRET`, else the one `up` keeps in the data directory,
    else one derived from the JWT secret (HMAC-SHA256 under a label of its
    own: an independent key, so a link can never be taken for a token and
    the other way round). Every API process and worker must use the same.
    With public-key tokens and none of these there is nothing to derive
    from: ConfigError naming the variable."""
    if settings.link_secret:
        return settings.link_secret
    secret = _read_secret_file(settings.link_secret_file)
    if secret is not None:
        return secret
    jwt_secret = load_secret(settings) if settings.jwt_public_key_file is None else None
    if jwt_secret is None:
        raise ConfigError(
            "EXPORTD_LINK_SECRET",
            "not set (signed download links need it with public-key tokens; generate one "
            "with `python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`)",
        )
    return hmac.new(jwt_secret.encode(), _LINK_KEY_LABEL, hashlib.sha256).hexdigest()


def ensure_link_secret(settings: Settings) -> str:
    """`up`: the link secret, generated and kept in the data directory on first use."""
    if settings.link_secret:
        return settings.link_secret
    return _read_secret_file(settings.link_secret_file) or _write_secret_file(
        settings.link_secret_file
    )


def _read_secret_file(path: Path) -> str | None:
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError("EXPORTD_DATA_DIR", f"cannot read {path}: {exc.strerror}") from None
    if len(secret.encode()) < MIN_HMAC_SECRET_BYTES:
        raise ConfigError("EXPORTD_DATA_DIR", f"{path} holds a secret that is too short")
    return secret


def _write_secret_file(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret


def mint_token(
    settings: Settings,
    *,
    subject: str,
    admin: bool = False,
    ttl_seconds: int = 3600,
    now: float | None = None,
) -> str:
    """Sign a token with `sub`, `iat`, `exp` (and `iss`/`aud`/role when configured)."""
    if settings.jwt_public_key_file is not None:
        raise ConfigError(
            "EXPORTD_JWT_PUBLIC_KEY_FILE",
            "tokens for a public-key setup come from your identity provider, not `exportd token`",
        )
    secret = load_secret(settings)
    if secret is None:
        raise ConfigError(
            "EXPORTD_JWT_SECRET",
            "not set (and no secret in the data directory yet; run `exportd up` once)",
        )
    if not subject:
        raise ValueError("the subject must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("the TTL must be positive")
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": subject, "iat": issued, "exp": issued + ttl_seconds}
    if admin:
        claims[settings.jwt_role_claim] = "admin"
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    algorithm = settings.jwt_algorithms[0]
    return jwt.encode(claims, secret, algorithm=algorithm)
