"""Standard Webhooks signatures (https://www.standardwebhooks.com).

The receiver recomputes `base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`
with the key of the shared `whsec_…` secret and compares it with the
`webhook-signature` header (`v1,<signature>`); `webhook-timestamp` lets it
refuse old messages (replays), `webhook-id` — the event id, the same on
every attempt — lets it ignore a delivery it already processed. Any
Standard Webhooks library verifies these headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from daemon import __version__

USER_AGENT = f"exportd/{__version__}"


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one attempt."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one attempt (the body is JSON)."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
    }
