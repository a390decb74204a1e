"""A webhook's host is resolved within a bound: a name whose servers never answer is refused
after RESOLVE_SECONDS instead of holding the thread every tenant's sync requests share."""

import socket
import threading

import pytest

from webhooks import addresses
from webhooks.addresses import AddressRefused, url_address

WAIT = 5.0  # the most any step may take before the test fails


@pytest.fixture
def silent_dns(monkeypatch):
    """A resolver that answers for `silent.example` only once released (the test's end)."""
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "silent.example":
            release.wait(WAIT)
            raise socket.gaierror("timed out")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(addresses.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(addresses, "RESOLVE_SECONDS", 0.2)
    yield
    release.set()


def test_a_host_whose_name_servers_never_answer_is_refused_after_the_bound(silent_dns):
    # Refused by the bound, not by the resolver's own failure (after 5 s here).
    with pytest.raises(AddressRefused, match=r"did not resolve within 0\.2 s"):
        url_address("https://silent.example/hook")


def test_while_lookups_hang_other_hosts_are_still_resolved(silent_dns, settings):
    settings.EVENTHUB_WEBHOOK_ALLOW_PRIVATE = True
    for _ in range(2):
        with pytest.raises(AddressRefused):
            url_address("https://silent.example/hook")

    assert url_address("http://127.0.0.1:9/hook") == "127.0.0.1"


def test_a_name_that_does_not_exist_is_refused_as_before():
    with pytest.raises(AddressRefused, match="does not resolve"):
        url_address("http://no-such-host.invalid/")
