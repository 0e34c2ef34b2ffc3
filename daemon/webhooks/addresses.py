"""The SSRF guard: which URLs a webhook may be sent to, and which address it connects to.

Two lists of the configuration, two questions:

- `EXPORTD_WEBHOOK_ALLOWED_HOSTS`: which hosts a job's `notify_url` may name
  at all (checked when the job is created; `check_notify_url`);
- `EXPORTD_WEBHOOK_PRIVATE_HOSTS`: which hosts may resolve to a loopback,
  private, link-local or otherwise non-public address (checked at every
  delivery, for configured endpoints too; `resolve`).

A host is resolved once per attempt, every address it resolves to is
checked, and the connection goes to the checked address (`daemon.webhooks.sender`
puts it in the URL and sends the name as Host and TLS SNI): a DNS answer
that changes between the check and the connect cannot move the request. A
cloud metadata address is refused whatever the lists say.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from daemon.webhooks.endpoints import host_matches, parse_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services (AWS, GCP, Azure: 169.254.169.254; AWS over
# IPv6; ECS task metadata; Alibaba). Never a webhook receiver.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)


class DeliveryRefused(Exception):
    """The guard refuses this destination (recorded as outcome `refused`)."""


def check_notify_url(raw: object, allowed_hosts: tuple[str, ...]) -> str:
    """A job's `notify_url`, or ValueError saying what is wrong with it."""
    url = parse_url(raw)
    host = urlsplit(url).hostname or ""
    if not allowed_hosts:
        raise ValueError("this server accepts no notify_url (EXPORTD_WEBHOOK_ALLOWED_HOSTS)")
    if not host_matches(host, allowed_hosts):
        raise ValueError("its host is not one this server may notify")
    literal = _literal(host)
    if literal is not None and literal in METADATA_ADDRESSES:
        raise ValueError("its host is a cloud metadata address")
    return url


def refusal(address: IPAddress) -> str | None:
    """Why `address` is not public (None: it is)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


async def resolve(host: str, port: int, private_hosts: tuple[str, ...]) -> IPAddress:
    """The address to connect to for `host`: every address it resolves to
    passes the guard (or the host is in `private_hosts`, where only metadata
    addresses are refused); the first one is returned. DeliveryRefused
    otherwise, OSError when the name does not resolve."""
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addresses = list(dict.fromkeys(_address(str(info[4][0])) for info in infos))
        if not addresses:
            raise OSError(f"{host} has no address")
    private_ok = host_matches(host, private_hosts)
    for address in addresses:
        reason = refusal(address)
        if reason is None:
            continue
        if reason == "a cloud metadata address" or not private_ok:
            shown = host if literal is not None else f"{host} resolves to {address}, which"
            raise DeliveryRefused(
                f"{shown} is {reason} (list the host in EXPORTD_WEBHOOK_PRIVATE_HOSTS to allow it)"
                if reason != "a cloud metadata address"
                else f"{shown} is {reason}"
            )
    return addresses[0]


def _literal(host: str) -> IPAddress | None:
    try:
        return _address(host.strip("[]"))
    except ValueError:
        return None


def _address(text: str) -> IPAddress:
    # getaddrinfo may add a zone ("fe80::1%eth0"); the zone does not change the class.
    return ipaddress.ip_address(text.split("%", 1)[0])
