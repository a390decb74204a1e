"""Registering, listing and deleting webhook endpoints, and their deliveries: /api/v1/webhooks."""

import pytest
from asgiref.sync import sync_to_async

from tenants.models import AuditEntry
from tenants.services import api_key_issue
from tests.conftest import asgi_client
from tests.factories import ACTOR
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)


async def create(key: str, **body):
    async with asgi_client(key) as client:
        return await client.post("/api/v1/webhooks", json=body)


async def test_it_registers_an_endpoint_and_shows_its_secret_once(api_key, allow_private):
    response = await create(api_key, url="http://127.0.0.1:9/hook", topics=["orders.*"])

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["url"] == "http://127.0.0.1:9/hook"
    assert body["topics"] == ["orders.*"]
    assert body["kinds"] == ["event"]
    assert body["active"] is True
    assert body["secret"].startswith("whsec_")
    async with asgi_client(api_key) as client:
        listed = (await client.get("/api/v1/webhooks")).json()["results"]
    assert [e["id"] for e in listed] == [body["id"]]
    assert "secret" not in listed[0]
    stored = await WebhookEndpoint.objects.aget(pk=body["id"])
    assert body["secret"].removeprefix("whsec_") not in str(vars(stored))


async def test_it_records_creation_and_deletion_in_the_audit_trail(api_key, allow_private):
    created = (await create(api_key, url="http://127.0.0.1:9/", kinds=["presence"])).json()

    async with asgi_client(api_key) as client:
        response = await client.delete(f"/api/v1/webhooks/{created['id']}")
        again = await client.delete(f"/api/v1/webhooks/{created['id']}")

    assert response.status_code == 204
    assert again.status_code == 404
    actions = [a async for a in AuditEntry.objects.values_list("action", flat=True)]
    assert "webhook.create" in actions
    assert "webhook.delete" in actions


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://no-such-host.invalid/",
    ],
)
async def test_it_refuses_urls_that_resolve_to_internal_addresses(api_key, url):
    response = await create(api_key, url=url)

    assert response.status_code == 400
    assert "url" in response.json()


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/"},
        {"url": "not a url"},
        {"url": "http://127.0.0.1/", "kinds": ["nope"]},
        {"url": "http://127.0.0.1/", "kinds": []},
        {"url": "http://127.0.0.1/", "topics": ["bad topic"]},
        {"url": "http://127.0.0.1/", "topics": ["t"] * 101},
        {"topics": ["t"]},
    ],
)
async def test_it_refuses_a_bad_body_with_400(api_key, allow_private, body):
    response = await create(api_key, **body)

    assert response.status_code == 400


async def test_it_needs_the_webhooks_scope(tenant, allow_private):
    issued = await sync_to_async(api_key_issue)(
        actor=ACTOR, tenant=tenant, scopes=["publish", "history"]
    )
    key = issued.secret

    response = await create(key, url="http://127.0.0.1:9/")

    assert response.status_code == 403


async def test_another_tenants_endpoint_is_not_found(api_key, other_key, allow_private):
    created = (await create(api_key, url="http://127.0.0.1:9/")).json()

    async with asgi_client(other_key) as client:
        listed = (await client.get("/api/v1/webhooks")).json()["results"]
        deliveries = await client.get(f"/api/v1/webhooks/{created['id']}/deliveries")
        deleted = await client.delete(f"/api/v1/webhooks/{created['id']}")

    assert listed == []
    assert deliveries.status_code == 404
    assert deleted.status_code == 404
    assert await WebhookEndpoint.objects.filter(pk=created["id"]).aexists()


def test_a_new_key_has_every_scope_webhooks_included(tenant):
    issued = api_key_issue(actor=ACTOR, tenant=tenant)

    assert issued.api_key.scopes == ["history", "publish", "subscribe", "webhooks"]
