"""How the hub reaches Redis, from its environment: a URL (TLS with `rediss://`) or Redis
Sentinel, and a clear refusal to start for settings that could not connect (issue 12, item 7)."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from eventhub.redis_connection import CONNECT_TIMEOUT, SENTINEL_TIMEOUT, redis_host
from tests.processes import base_env, manage_run


def test_no_url_and_no_sentinels_is_the_embedded_default():
    assert redis_host() is None


def test_a_plain_url_is_the_channel_layer_address():
    assert redis_host(url="redis://:pw@cache:6379/2") == {
        "address": "redis://:pw@cache:6379/2",
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }


def test_a_rediss_url_verifies_against_the_system_cas_unless_given_a_bundle(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")

    assert "ssl_ca_certs" not in redis_host(url="rediss://cache:6380/0")
    assert "ssl_cert_reqs" not in redis_host(url="rediss://cache:6380/0")
    assert redis_host(url="rediss://cache:6380/0", tls_ca_file=str(ca))["ssl_ca_certs"] == str(ca)


def test_tls_verification_is_off_only_when_asked_with_a_zero():
    host = redis_host(url="rediss://cache:6380/0", tls_verify="0")

    assert host["ssl_cert_reqs"] == "none"
    assert "ssl_cert_reqs" not in redis_host(url="rediss://cache:6380/0", tls_verify="1")


def test_sentinels_give_the_master_of_the_service_with_both_passwords():
    host = redis_host(
        sentinels=["10.0.0.1:26379", " 10.0.0.2:26380", "[::1]:26381", ""],
        sentinel_service="mymaster",
        sentinel_password="sentinel-pw",
        password="master-pw",
    )

    assert host == {
        "master_name": "mymaster",
        "sentinels": [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)],
        "sentinel_kwargs": {
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            "password": "sentinel-pw",
        },
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "password": "master-pw",
    }


def test_sentinels_without_passwords_send_none():
    host = redis_host(sentinels=["s1:26379"], sentinel_service="mymaster")

    assert "password" not in host
    assert "password" not in host["sentinel_kwargs"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "http://cache:6379"}, "REDIS_URL is not a Redis URL"),
        ({"url": "redis://cache:port/0"}, "REDIS_URL is not a Redis URL"),
        ({"url": "redis://cache:6379/0", "tls_ca_file": "/etc/hosts"}, "needs a rediss://"),
        ({"url": "rediss://cache:6380/0", "tls_ca_file": "/nonexistent.pem"}, "cannot be read"),
        ({"url": "redis://cache:6379/0", "tls_verify": "0"}, "needs a rediss://"),
        ({"url": "rediss://c/0", "tls_verify": "0", "tls_ca_file": "/etc/hosts"}, "set one"),
        ({"url": "rediss://cache:6380/0", "tls_verify": "no please"}, "must be 1 or 0"),
        ({"tls_ca_file": "/etc/hosts"}, "need a REDIS_URL"),
        ({"url": "redis://c/0", "sentinels": ["s:26379"]}, "not both"),
        ({"sentinels": ["s:26379"]}, "needs REDIS_SENTINEL_SERVICE"),
        ({"sentinels": ["s"], "sentinel_service": "m"}, "is not HOST:PORT"),
        ({"sentinels": ["s:port"], "sentinel_service": "m"}, "is not HOST:PORT"),
        ({"sentinels": ["s:70000"], "sentinel_service": "m"}, "is not HOST:PORT"),
        ({"sentinels": [":26379"], "sentinel_service": "m"}, "is not HOST:PORT"),
        ({"sentinels": ["s:1"], "sentinel_service": "m", "tls_verify": "0"}, "not supported"),
        ({"url": "redis://c/0", "password": "pw"}, "REDIS_PASSWORD is only used with"),
        ({"sentinel_service": "mymaster"}, "REDIS_SENTINEL_SERVICE is only used with"),
        ({"sentinel_password": "pw"}, "REDIS_SENTINEL_PASSWORD is only used with"),
    ],
    ids=[
        "not-a-redis-scheme",
        "port-not-a-number",
        "ca-file-without-tls",
        "ca-file-missing",
        "verify-off-without-tls",
        "verify-off-with-a-ca-file",
        "verify-not-a-flag",
        "ca-file-without-url",
        "url-and-sentinels",
        "sentinels-without-service",
        "sentinel-without-port",
        "sentinel-port-not-a-number",
        "sentinel-port-out-of-range",
        "sentinel-without-host",
        "tls-through-sentinel",
        "password-beside-a-url",
        "service-without-sentinels",
        "sentinel-password-without-sentinels",
    ],
)
def test_a_setting_that_could_not_connect_is_refused_by_name(settings, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        redis_host(**settings)


def test_the_hub_does_not_start_with_a_bad_redis_setting():
    env = base_env(
        DATABASE_URL="sqlite:///:memory:",
        REDIS_SENTINELS="10.0.0.1",
        REDIS_SENTINEL_SERVICE="mymaster",
    )

    done = manage_run(env, "check")

    assert done.returncode != 0
    assert "ImproperlyConfigured: REDIS_SENTINELS entry '10.0.0.1' is not HOST:PORT" in done.stderr
