"""API key authentication and permissions, seen through the REST API."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from django.utils import timezone

from tenants import selectors
from tenants.models import ApiKey
from tenants.services import api_key_issue, api_key_revoke, tenant_set_active
from tests.conftest import asgi_client
from tests.factories import ACTOR
from tests.streams import test_tokens as tokens

pytestmark = pytest.mark.django_db(transaction=True)

EVENT = {"topic": "orders.created", "data": {"id": 1}}


def assert_unauthenticated(response) -> None:
    assert response.status_code == 401, response.content
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"]


def assert_forbidden(response, reason: str) -> None:
    assert response.status_code == 403, response.content
    assert response.headers["content-type"].startswith("application/json")
    assert reason in response.json()["detail"]


@pytest.fixture
def revoked_key(tenant):
    issued = api_key_issue(actor=ACTOR, tenant=tenant)
    api_key_revoke(actor=ACTOR, api_key=issued.api_key)
    return issued.secret


@pytest.fixture
def expired_key(tenant):
    return api_key_issue(
        actor=ACTOR, tenant=tenant, expires_at=timezone.now() - timedelta(seconds=1)
    ).secret


@pytest.fixture
def suspended_key(tenant, api_key):
    tenant_set_active(actor=ACTOR, tenant=tenant, active=False)
    return api_key


async def test_a_valid_key_publishes(api_key):
    async with asgi_client(api_key) as client:
        response = await client.post("/api/v1/events", json=EVENT)
    assert response.status_code == 202


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic-auth"),
    ],
)
async def test_it_asks_for_a_key_when_none_is_given(headers):
    async with asgi_client() as client:
        response = await client.post("/api/v1/events", json=EVENT, headers=headers)
    assert_unauthenticated(response)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer ehk_deadbeef_" + "x" * 43,
        "Bearer not-a-key",
        "Bearer",
        "Bearer two parts",
        "bearer ehk_deadbeef_" + "y" * 43,
    ],
)
async def test_it_rejects_an_unknown_key(db, authorization):
    async with asgi_client() as client:
        response = await client.post(
            "/api/v1/events", json=EVENT, headers={"Authorization": authorization}
        )
    assert_unauthenticated(response)


async def test_it_rejects_a_revoked_key(revoked_key):
    async with asgi_client(revoked_key) as client:
        response = await client.post("/api/v1/events", json=EVENT)
    assert_unauthenticated(response)
    assert "revoked" in response.json()["detail"]


async def test_it_rejects_a_key_revoked_after_it_was_used(tenant):
    issued = await sync_to_async(api_key_issue)(actor=ACTOR, tenant=tenant)
    async with asgi_client(issued.secret) as client:
        assert (await client.post("/api/v1/events", json=EVENT)).status_code == 202
        api_key = await ApiKey.objects.aget(pk=issued.api_key.pk)
        await sync_to_async(api_key_revoke)(actor=ACTOR, api_key=api_key)
        response = await client.post("/api/v1/events", json=EVENT)
    assert_unauthenticated(response)


async def test_it_rejects_an_expired_key(expired_key):
    async with asgi_client(expired_key) as client:
        response = await client.get("/api/v1/stats")
    assert_unauthenticated(response)
    assert "expired" in response.json()["detail"]


async def test_it_forbids_a_suspended_tenant(suspended_key):
    async with asgi_client(suspended_key) as client:
        published = await client.post("/api/v1/events", json=EVENT)
        history = await client.get("/api/v1/events")
    assert_forbidden(published, "suspended")
    assert_forbidden(history, "suspended")


async def test_it_forbids_a_tenant_suspended_after_its_key_was_used(tenant, api_key):
    async with asgi_client(api_key) as client:
        assert (await client.post("/api/v1/events", json=EVENT)).status_code == 202
        await sync_to_async(tenant_set_active)(actor=ACTOR, tenant=tenant, active=False)
        response = await client.post("/api/v1/events", json=EVENT)
    assert_forbidden(response, "suspended")


async def test_it_forbids_reading_history_without_the_history_scope(publish_only_key):
    async with asgi_client(publish_only_key) as client:
        response = await client.get("/api/v1/events")
    assert_forbidden(response, "history")


async def test_it_forbids_publishing_without_the_publish_scope(subscribe_only_key):
    async with asgi_client(subscribe_only_key) as client:
        single = await client.post("/api/v1/events", json=EVENT)
        batch = await client.post("/api/v1/events/batch", json={"events": [EVENT]})
    assert_forbidden(single, "publish")
    assert_forbidden(batch, "publish")


async def test_it_forbids_issuing_tokens_without_the_subscribe_scope(publish_only_key):
    async with asgi_client(publish_only_key) as client:
        response = await client.post("/api/v1/tokens", json={"topics": ["*"]})
    assert_forbidden(response, "subscribe")


async def test_a_key_with_only_the_publish_scope_publishes(publish_only_key):
    async with asgi_client(publish_only_key) as client:
        response = await client.post("/api/v1/events", json=EVENT)
    assert response.status_code == 202


async def publish(key: str):
    async with asgi_client(key) as client:
        return await client.post("/api/v1/events", json=EVENT)


# The test client builds a handler of its own; Django warns that `collectstatic` has not run.
@pytest.mark.filterwarnings("ignore:No directory at")
def test_a_scope_removed_in_the_admin_applies_to_publishing_at_once(admin_client, tenant):
    issued = api_key_issue(actor=ACTOR, tenant=tenant, name="app")
    assert async_to_sync(publish)(issued.secret).status_code == 202  # and the key is cached

    changed = admin_client.post(
        f"/admin/tenants/apikey/{issued.api_key.pk}/change/",
        {"name": "app", "scopes": ["subscribe", "history"], "expires_at_0": "", "expires_at_1": ""},
    )

    assert changed.status_code == 302, changed.content
    assert ApiKey.objects.get(pk=issued.api_key.pk).scopes == ["history", "subscribe"]
    assert_forbidden(async_to_sync(publish)(issued.secret), "publish")


@pytest.mark.filterwarnings("ignore:No directory at")
def test_the_key_cache_is_emptied_again_once_the_admins_change_is_committed(
    admin_client, tenant, monkeypatch
):
    # A request served while the admin's transaction is open reads (and caches) the old row.
    issued = api_key_issue(actor=ACTOR, tenant=tenant, name="app")
    in_transaction = []
    clear = selectors.api_key_cache_clear
    monkeypatch.setattr(
        selectors,
        "api_key_cache_clear",
        lambda: in_transaction.append(connection.in_atomic_block) or clear(),
    )

    admin_client.post(
        f"/admin/tenants/apikey/{issued.api_key.pk}/change/",
        {"name": "app", "scopes": ["history"], "expires_at_0": "", "expires_at_1": ""},
    )

    assert in_transaction[-1] is False


@pytest.mark.filterwarnings("ignore:No directory at")
def test_a_tenant_suspended_in_its_change_form_is_refused_at_once(admin_client, tenant):
    issued = api_key_issue(actor=ACTOR, tenant=tenant, name="app")
    token = async_to_sync(tokens.issue)(issued.secret, ["*"])
    async_to_sync(tokens.ws_open)(token=token)  # the key is cached now, by id and by secret
    assert async_to_sync(publish)(issued.secret).status_code == 202

    changed = admin_client.post(  # "Is active" unticked
        f"/admin/tenants/tenant/{tenant.pk}/change/",
        {"slug": tenant.slug, "name": tenant.name, "max_connections": "", "publish_rate": ""},
    )

    assert changed.status_code == 302, changed.content
    assert async_to_sync(tokens.ws_refused)(token=token) == 4403
    assert_forbidden(async_to_sync(publish)(issued.secret), "suspended")
