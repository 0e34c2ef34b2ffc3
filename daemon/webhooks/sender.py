"""One HTTP attempt of a webhook: guarded, bounded, never followed elsewhere.

- the host is resolved and checked (`daemon.webhooks.addresses.resolve`),
  and the request goes to that very address: the URL given to httpx carries
  the IP, the Host header and the TLS server name (SNI, certificate check)
  carry the name. A fresh client per attempt, so a TLS connection made for
  one name is never reused for another name on the same address;
- the whole attempt (resolution included) has one deadline;
- redirects are not followed (a 3xx is a failed attempt); proxies from the
  environment are not used (they would bypass the guard);
- at most MAX_RESPONSE_BYTES of the answer are read, and nothing of it is
  kept: a receiver cannot fill exportd's memory or its tables.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit, urlunsplit

import httpx

from daemon.webhooks.addresses import DeliveryRefused, IPAddress, resolve

MAX_RESPONSE_BYTES = 64 * 1024
MAX_ERROR_LENGTH = 300


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt went (a row of exportd.webhook_deliveries)."""

    outcome: str  # delivered, rejected, timeout, unreachable, refused
    status_code: int | None
    duration_ms: int
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


@cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle takes milliseconds: once per process, not per attempt.
    return ssl.create_default_context()


async def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    private_hosts: tuple[str, ...],
    timeout: float,  # noqa: ASYNC109 - the attempt's own deadline, recorded as its outcome
) -> AttemptResult:
    """POST `body` to `url` once; never raises for what the receiver or the
    network does."""
    started = time.monotonic()

    def result(outcome: str, status: int | None = None, error: str | None = None) -> AttemptResult:
        elapsed = int((time.monotonic() - started) * 1000)
        return AttemptResult(outcome, status, elapsed, error and error[:MAX_ERROR_LENGTH])

    try:
        async with asyncio.timeout(timeout):
            status = await _send(url, body, headers, private_hosts, timeout)
    except DeliveryRefused as exc:
        return result("refused", error=str(exc))
    except (TimeoutError, httpx.TimeoutException):
        return result("timeout", error=f"no answer within {timeout:g} s")
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        # ValueError: a name the resolver cannot encode (UnicodeError), a bad port.
        return result("unreachable", error=_describe(exc))
    if 200 <= status < 300:
        return result("delivered", status)
    if 300 <= status < 400:
        return result("rejected", status, f"HTTP {status} (redirects are not followed)")
    return result("rejected", status, f"HTTP {status}")


async def _send(
    url: str,
    body: bytes,
    headers: dict[str, str],
    private_hosts: tuple[str, ...],
    timeout: float,  # noqa: ASYNC109 - httpx's own timeouts, inside the attempt's deadline
) -> int:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = await resolve(host, port, private_hosts)
    pinned = urlunsplit(
        (parts.scheme, f"{_netloc(address)}:{port}", parts.path or "/", parts.query, "")
    )
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    async with (
        httpx.AsyncClient(
            verify=_tls_context(),
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
        ) as client,
        client.stream(
            "POST",
            pinned,
            content=body,
            headers={**headers, "host": parts.netloc},
            extensions=extensions,
        ) as response,
    ):
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= MAX_RESPONSE_BYTES:
                break
        return response.status_code


def _netloc(address: IPAddress) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def _describe(exc: BaseException) -> str:
    """A short reason: the exception's class and its first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
