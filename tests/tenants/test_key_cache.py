"""The per-process key cache: what a revocation empties stays empty."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import OperationalError, connections

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


class DatabaseDown:
    """Stands in for ApiKey.objects while the database cannot be reached."""

    def select_related(self, *args):
        raise OperationalError("connection refused")


def test_while_the_database_is_down_a_key_read_before_still_authenticates(tenant, monkeypatch):
    issued = api_key_issue(actor=ACTOR, tenant=tenant)
    assert selectors.api_key_principal(raw_key=issued.secret) is not None  # read once

    monkeypatch.setattr(selectors.ApiKey, "objects", DatabaseDown())

    principal = selectors.api_key_principal(raw_key=issued.secret)
    assert principal is not None
    assert principal.key_id == issued.api_key.pk


def test_while_the_database_is_down_a_key_never_read_is_unavailable_not_unknown(
    tenant, monkeypatch
):
    issued = api_key_issue(actor=ACTOR, tenant=tenant)
    monkeypatch.setattr(selectors.ApiKey, "objects", DatabaseDown())

    with pytest.raises(selectors.CredentialsUnavailable):
        selectors.api_key_principal(raw_key=issued.secret)


def test_a_key_read_longer_ago_than_the_stale_limit_is_unavailable_in_an_outage(
    tenant, monkeypatch, settings
):
    settings.EVENTHUB_KEY_STALE_SECONDS = 0
    settings.EVENTHUB_KEY_CACHE_SECONDS = 0  # every look-up asks the database
    issued = api_key_issue(actor=ACTOR, tenant=tenant)
    selectors.api_key_principal(raw_key=issued.secret)
    monkeypatch.setattr(selectors.ApiKey, "objects", DatabaseDown())

    with pytest.raises(selectors.CredentialsUnavailable):
        selectors.api_key_principal(raw_key=issued.secret)


async def test_publishing_with_a_key_never_read_during_an_outage_is_a_503(api_client, monkeypatch):
    monkeypatch.setattr(selectors.ApiKey, "objects", DatabaseDown())

    async with api_client as client:
        response = await client.post("/api/v1/events", json={"topic": "t", "data": 1})

    assert response.status_code == 503
    assert response.headers["Retry-After"]
