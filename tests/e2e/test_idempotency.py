"""A publish retried with the same Idempotency-Key gets the first answer, and its events are
delivered and logged once."""

import pytest

from tests.clients import bearer
from tests.e2e.conftest import eventually, history, publish

pytestmark = pytest.mark.e2e


async def post(api, hub, key: str, path: str, body: dict, idempotency_key: str):
    return await api.post(
        f"{hub.url}{path}",
        json=body,
        headers={**bearer(key), "Idempotency-Key": idempotency_key},
    )


async def logged_data(api, hub, key, count: int) -> list:
    async def all_there():
        events = await history(api, hub, key)
        return events if len(events) >= count else None

    return [e["data"] for e in await eventually(all_there, 5, f"{count} events in the log")]


async def test_a_retried_publish_gets_the_first_answer_and_is_delivered_once(
    hub, tenant, api, subscribers
):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()
    body = {"topic": "payments", "data": {"amount": 10}}

    first = await post(api, hub, tenant.key, "/api/v1/events", body, "pay-1")
    retry = await post(api, hub, tenant.key, "/api/v1/events", body, "pay-1")
    await publish(api, hub, tenant.key, "payments", "fence")

    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json()
    assert [e["data"] for e in await ws.until("fence")] == [{"amount": 10}, "fence"]
    assert await logged_data(api, hub, tenant.key, 2) == [{"amount": 10}, "fence"]


async def test_a_retried_batch_gets_the_first_answer_and_is_logged_once(hub, tenant, api):
    body = {"events": [{"topic": "a", "data": 1}, {"topic": "b", "data": 2}]}

    first = await post(api, hub, tenant.key, "/api/v1/events/batch", body, "batch-1")
    retry = await post(api, hub, tenant.key, "/api/v1/events/batch", body, "batch-1")
    await publish(api, hub, tenant.key, "c", "fence")

    assert retry.status_code == first.status_code == 202
    assert retry.json() == first.json()
    assert await logged_data(api, hub, tenant.key, 3) == [1, 2, "fence"]


async def test_different_keys_publish_different_events(hub, tenant, api):
    body = {"topic": "payments", "data": 1}

    first = await post(api, hub, tenant.key, "/api/v1/events", body, "k-1")
    second = await post(api, hub, tenant.key, "/api/v1/events", body, "k-2")

    assert first.json()["id"] != second.json()["id"]


async def test_a_key_reused_with_another_body_is_refused(hub, tenant, api):
    await post(api, hub, tenant.key, "/api/v1/events", {"topic": "a", "data": 1}, "reused")

    other = await post(api, hub, tenant.key, "/api/v1/events", {"topic": "a", "data": 2}, "reused")

    assert other.status_code == 422
    assert other.headers["content-type"].startswith("application/json")
    assert other.json()["detail"]


async def test_the_same_key_in_two_tenants_is_two_events(hub, api):
    acme, globex = hub.tenant("acme"), hub.tenant("globex")
    body = {"topic": "a", "data": 1}

    for tenant in (acme, globex):
        response = await post(api, hub, tenant.key, "/api/v1/events", body, "shared-key")
        assert response.status_code == 202

    assert await logged_data(api, hub, acme.key, 1) == [1]
    assert await logged_data(api, hub, globex.key, 1) == [1]


async def test_a_publish_retried_after_a_restart_is_still_logged_once(own_hub, api):
    tenant = own_hub.tenant()
    body = {"topic": "payments", "data": {"amount": 10}}
    first = await post(api, own_hub, tenant.key, "/api/v1/events", body, "pay-1")
    assert first.status_code == 202

    own_hub.restart()
    retry = await post(api, own_hub, tenant.key, "/api/v1/events", body, "pay-1")

    assert retry.status_code == 202
    assert retry.json() == first.json()
    assert [e["id"] for e in await history(api, own_hub, tenant.key)] == [first.json()["id"]]
