"""The per-process key cache: what a revocation empties stays empty."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from tenants import selectors
from tenants.services import api_key_issue, api_key_revoke
from tests.factories import ACTOR

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_lookup_that_raced_a_revocation_does_not_cache_the_key_as_it_was(tenant, monkeypatch):
    issued = api_key_issue(actor=ACTOR, tenant=tenant)
    read, revoked = threading.Event(), threading.Event()
    build = selectors._principal_from

    def build_after_the_revocation(api_key):
        read.set()  # the row is read, as it was before the revocation
        assert revoked.wait(5)
        return build(api_key)

    def lookup():
        try:
            return selectors.api_key_principal(raw_key=issued.secret)
        finally:
            connections.close_all()

    monkeypatch.setattr(selectors, "_principal_from", build_after_the_revocation)
    with ThreadPoolExecutor(1) as pool:
        raced = pool.submit(lookup)
        assert read.wait(5)
        api_key_revoke(actor=ACTOR, api_key=issued.api_key)  # empties the cache
        revoked.set()
        stale = raced.result(5)
    monkeypatch.setattr(selectors, "_principal_from", build)

    assert not stale.revoked  # that request was served with the row as it was read, but
    assert selectors.api_key_principal(raw_key=issued.secret).revoked  # the next one sees it
