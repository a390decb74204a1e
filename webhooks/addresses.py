"""Provides the check that keeps webhooks off internal networks (SSRF): a URL's host is resolved
and every address it has must be public, unless EVENTHUB_WEBHOOK_ALLOW_PRIVATE is set."""

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class AddressRefused(ValueError):
    """The URL cannot be sent to: its host does not resolve, or to a non-public address."""


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _port(parts) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _checked(host: str, infos: list) -> str:
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise AddressRefused(f"{host} does not resolve")
    if not settings.EVENTHUB_WEBHOOK_ALLOW_PRIVATE:
        refused = [a for a in addresses if not _public(a)]
        if refused:
            raise AddressRefused(
                f"{host} resolves to {refused[0]}, a loopback, private, link-local or "
                "reserved address"
            )
    return addresses[0]


def url_address(url: str) -> str:
    """The address to connect to for `url`, resolved now; raises AddressRefused."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, _port(parts), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise AddressRefused(f"{host} does not resolve") from exc
    return _checked(host, infos)


async def url_address_async(url: str) -> str:
    """url_address, resolving on the loop's resolver (a thread), for the sender."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, _port(parts), type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError, ValueError) as exc:
        raise AddressRefused(f"{host} does not resolve") from exc
    return _checked(host, infos)
