"""Provides how the hub reaches Redis: a URL (`rediss://`: TLS) or Sentinel, checked at start-up."""

import os
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from redis.connection import parse_url

# Every connection gives up connecting after this long: a wrong port or a TLS handshake that is
# never answered (`rediss://` to a plain port) must not hold up a request or a start.
CONNECT_TIMEOUT = 2.0
# How long a Sentinel may take to answer; the next one in REDIS_SENTINELS is asked after that.
SENTINEL_TIMEOUT = 2.0


def redis_host(
    *,
    url: str = "",
    tls_ca_file: str = "",
    tls_verify: str = "1",
    sentinels: Sequence[str] = (),
    sentinel_service: str = "",
    sentinel_password: str = "",
    password: str = "",
) -> dict[str, Any] | None:
    """The Redis the hub shares its state through, as one channels-redis host: the keyword
    arguments of `channels_redis.utils.create_pool` (an `address` URL, or a `master_name` and its
    `sentinels`). None when neither a URL nor Sentinels are given: the embedded default.

    Raises ImproperlyConfigured, naming the variable, for anything that could not connect.
    """
    verify = _flag("REDIS_TLS_VERIFY", tls_verify)
    sentinels = [s.strip() for s in sentinels if s.strip()]
    if url and sentinels:
        raise ImproperlyConfigured(
            "Set REDIS_URL or REDIS_SENTINELS, not both: with Sentinel the master's address "
            "comes from the Sentinels (its password from REDIS_PASSWORD)."
        )
    if sentinels:
        if tls_ca_file or not verify:
            raise ImproperlyConfigured(
                "REDIS_TLS_CA_FILE and REDIS_TLS_VERIFY apply to a rediss:// REDIS_URL; "
                "TLS through Sentinel is not supported."
            )
        return _sentinel_host(sentinels, sentinel_service, sentinel_password, password)
    for name, value in (
        ("REDIS_SENTINEL_SERVICE", sentinel_service),
        ("REDIS_SENTINEL_PASSWORD", sentinel_password),
        ("REDIS_PASSWORD", password),
    ):
        if value:
            raise ImproperlyConfigured(
                f"{name} is only used with REDIS_SENTINELS; with REDIS_URL a password goes in "
                "the URL (redis://:PASSWORD@host:6379/0)."
            )
    if not url:
        if tls_ca_file or not verify:
            raise ImproperlyConfigured("REDIS_TLS_CA_FILE and REDIS_TLS_VERIFY need a REDIS_URL.")
        return None
    return _url_host(url, tls_ca_file, verify)


def _url_host(url: str, tls_ca_file: str, tls_verify: bool) -> dict[str, Any]:
    try:
        parse_url(url)
    except ValueError as exc:
        raise ImproperlyConfigured(f"REDIS_URL is not a Redis URL: {exc}.") from None
    host: dict[str, Any] = {"address": url, "socket_connect_timeout": CONNECT_TIMEOUT}
    tls = url.startswith("rediss://")
    if tls_ca_file:
        if not tls:
            raise ImproperlyConfigured("REDIS_TLS_CA_FILE needs a rediss:// REDIS_URL (TLS).")
        if not os.access(tls_ca_file, os.R_OK):
            raise ImproperlyConfigured(f"REDIS_TLS_CA_FILE {tls_ca_file!r} cannot be read.")
        host["ssl_ca_certs"] = tls_ca_file
    if not tls_verify:
        if not tls:
            raise ImproperlyConfigured("REDIS_TLS_VERIFY=0 needs a rediss:// REDIS_URL (TLS).")
        if tls_ca_file:
            raise ImproperlyConfigured(
                "REDIS_TLS_VERIFY=0 turns off the check REDIS_TLS_CA_FILE is for: set one."
            )
        # Heroku Redis presents a self-signed certificate and no CA to trust, and sets
        # REDIS_URL itself (so `?ssl_cert_reqs=none` cannot be added to it): encrypted, unchecked.
        host["ssl_cert_reqs"] = "none"
    return host


def _sentinel_host(
    sentinels: list[str], service: str, sentinel_password: str, password: str
) -> dict[str, Any]:
    if not service:
        raise ImproperlyConfigured(
            "REDIS_SENTINELS needs REDIS_SENTINEL_SERVICE, the name the Sentinels monitor the "
            "master under (`sentinel monitor NAME ...`)."
        )
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
    }
    if sentinel_password:
        sentinel_kwargs["password"] = sentinel_password
    host: dict[str, Any] = {
        "master_name": service,
        "sentinels": [_host_port(s) for s in sentinels],
        "sentinel_kwargs": sentinel_kwargs,
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }
    if password:
        host["password"] = password
    return host


def _flag(name: str, value: str) -> bool:
    # Strict, unlike env.bool (anything but a true word is False): a typo must not turn off
    # certificate verification.
    word = value.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be 1 or 0, not {value!r}.")


def _host_port(entry: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:26379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(
            f"REDIS_SENTINELS entry {entry!r} is not HOST:PORT "
            "(comma-separated, e.g. 10.0.0.1:26379,10.0.0.2:26379)."
        )
    return host, int(port)
