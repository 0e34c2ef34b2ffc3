"""Signed download links (DESIGN §11): stateless tokens a browser can follow.

A token is `base64url(payload).base64url(mac)`:

    payload = job id (16 bytes) | package sha256 (32) | expiry, Unix seconds (8) | subject (UTF-8)
    mac     = HMAC-SHA256(EXPORTD_LINK_SECRET, "exportd-link-v1\\0" + payload)

The package's sha256 is in the signed payload, so a re-export (a new
package, a new sha256) invalidates every old link without any state; the
subject is the one who created the link, recorded on each download. A token
never holds the storage path or key. Verification checks the MAC in
constant time *before* anything else is believed, and refuses any encoding
but the canonical one (so no two strings are the same token). Here, not in
`web`: the webhooks of the worker hand out links too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from uuid import UUID

from daemon.errors import ExportdError

_DOMAIN = b"exportd-link-v1\0"
_FIXED = struct.Struct(">16s32sQ")  # job id, sha256, expiry
MAX_SUBJECT_BYTES = 1024
MAX_TOKEN_LENGTH = 4 * (_FIXED.size + MAX_SUBJECT_BYTES) // 3 + 64


class LinkInvalid(ExportdError):
    """Not a token this secret signed (tampered, truncated, foreign)."""


@dataclass(frozen=True)
class Link:
    """What a verified token says."""

    job_id: UUID
    package_sha256: str
    expires_at: int  # Unix seconds
    subject: str


def sign(secret: str, link: Link) -> str:
    """The token for `link`. ValueError for a subject too long to carry."""
    subject = link.subject.encode("utf-8")
    if not subject or len(subject) > MAX_SUBJECT_BYTES:
        raise ValueError(f"the subject must be 1-{MAX_SUBJECT_BYTES} bytes")
    payload = (
        _FIXED.pack(link.job_id.bytes, bytes.fromhex(link.package_sha256), link.expires_at)
        + subject
    )
    return f"{_encode(payload)}.{_encode(_mac(secret, payload))}"


def verify(secret: str, token: str) -> Link:
    """The link a token carries, once its MAC checks out; LinkInvalid otherwise.
    Expiry is the caller's to check (it answers 410, not 403)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise LinkInvalid("not a download link")
    encoded_payload, encoded_mac = token.split(".")
    payload, mac = _decode(encoded_payload), _decode(encoded_mac)
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise LinkInvalid("not a download link")
    if len(payload) <= _FIXED.size:
        raise LinkInvalid("not a download link")
    job_id, sha256, expires_at = _FIXED.unpack_from(payload)
    try:
        subject = payload[_FIXED.size :].decode("utf-8")
    except UnicodeDecodeError:
        raise LinkInvalid("not a download link") from None
    return Link(UUID(bytes=job_id), sha256.hex(), expires_at, subject)


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), _DOMAIN + payload, hashlib.sha256).digest()


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _decode(text: str) -> bytes:
    """Strict base64url without padding: anything but the canonical encoding
    of some bytes (other alphabets, padding, stray low bits) is refused."""
    if not text.isascii():
        raise LinkInvalid("not a download link")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise LinkInvalid("not a download link") from None
    if _encode(data) != text:
        raise LinkInvalid("not a download link")
    return data
