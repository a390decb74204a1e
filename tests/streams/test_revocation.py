"""Revoking a key or suspending a tenant takes effect on live connections and on publishing.

Live connections are re-checked by each process's hub (its supervisor) every
AUTH_RECHECK_SECONDS (2 s, on a heartbeat tick of at most 1 s), so a connection that lost its
right is closed within about 3 s;
the tests allow CLOSED_WITHIN. They run with the default timings, as a deployment would.
"""

import asyncio
import json
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from eventhub.asgi import application
from streams.delivery.supervisor import AUTH_RECHECK_SECONDS
from tenants.models import ApiKey
from tenants.services import api_key_issue, api_key_revoke, tenant_set_active
from tests.conftest import asgi_client
from tests.factories import ACTOR
from tests.streams import test_sse_consumer as sse

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_WITHIN = 6.0
assert AUTH_RECHECK_SECONDS + 1 < CLOSED_WITHIN


async def publish(key: str, topic: str = "t", data="x"):
    async with asgi_client(key) as client:
        return await client.post("/api/v1/events", json={"topic": topic, "data": data})


async def open_ws(key: str | None = None, query: str = "") -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    ws = WebsocketCommunicator(application, f"/ws/v1/events?{query}", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_json_from(timeout=2))["type"] == "welcome"
    return ws


async def closed_code(ws: WebsocketCommunicator) -> int:
    """Waits (bounded) for the server to close; returns the code, after the reason frame."""
    error = await ws.receive_json_from(timeout=CLOSED_WITHIN)
    assert error["type"] == "error", error
    closed = await ws.receive_output(timeout=1)
    assert closed["type"] == "websocket.close"
    assert closed["code"] == error["code"]
    return closed["code"]


async def stream_ended(stream: sse.SseStream) -> bool:
    """Waits (bounded) for the server to end the SSE response."""
    while True:
        message = await stream.communicator.receive_output(timeout=CLOSED_WITHIN)
        assert message["type"] == "http.response.body"
        if not message.get("more_body", False):
            return True


async def still_receives(ws: WebsocketCommunicator, key: str) -> bool:
    accepted = (await publish(key, "still-here")).json()
    return (await ws.receive_json_from(timeout=2))["id"] == accepted["id"]


async def connections(key: str) -> dict:
    async with asgi_client(key) as client:
        return (await client.get("/api/v1/stats")).json()["connections"]


@pytest.fixture
def issued(tenant):
    return api_key_issue(actor=ACTOR, tenant=tenant, name="to revoke")


# Live connections ---------------------------------------------------------------------------


async def test_revoking_a_key_closes_its_live_connections_and_no_others(issued, api_key, other_key):
    async with asgi_client(issued.secret) as client:
        token = (await client.post("/api/v1/tokens", json={"topics": ["*"]})).json()["token"]
    by_key = await open_ws(issued.secret)
    by_token = await open_ws(query=f"token={token}")
    stream, _ = await sse.connect(issued.secret)
    same_tenant = await open_ws(api_key)
    other_tenant = await open_ws(other_key)

    started = time.monotonic()
    await sync_to_async(api_key_revoke)(actor=ACTOR, api_key=issued.api_key)
    codes = await asyncio.gather(closed_code(by_key), closed_code(by_token))
    assert await stream_ended(stream)
    assert codes == [4403, 4403]
    assert time.monotonic() - started < CLOSED_WITHIN

    assert await still_receives(same_tenant, api_key)
    assert await still_receives(other_tenant, other_key)
    assert await connections(api_key) == {"websocket": 1, "sse": 0}
    for ws in (by_key, by_token, same_tenant, other_tenant):
        await ws.disconnect()
    await stream.close()


async def test_removing_a_keys_subscribe_scope_closes_its_live_connections(issued, api_key):
    async with asgi_client(issued.secret) as client:
        token = (await client.post("/api/v1/tokens", json={"topics": ["*"]})).json()["token"]
    by_key = await open_ws(issued.secret)
    by_token = await open_ws(query=f"token={token}")
    same_tenant = await open_ws(api_key)

    # As the admin's change form saves it.
    await ApiKey.objects.filter(pk=issued.api_key.pk).aupdate(scopes=["history", "publish"])

    assert await asyncio.gather(closed_code(by_key), closed_code(by_token)) == [4403, 4403]
    assert await still_receives(same_tenant, api_key)
    for ws in (by_key, by_token, same_tenant):
        await ws.disconnect()


async def test_revocation_closes_connections_when_a_publish_came_first(issued):
    # The hub's loops start on first use; here that is inside a REST request, whose context
    # they must not keep (its thread is gone when they next read the database).
    assert (await publish(issued.secret)).status_code == 202
    ws = await open_ws(issued.secret)

    await sync_to_async(api_key_revoke)(actor=ACTOR, api_key=issued.api_key)

    assert await closed_code(ws) == 4403


async def test_suspending_a_tenant_closes_its_live_connections_and_no_others(
    tenant, api_key, other_key
):
    async with asgi_client(api_key) as client:
        token = (await client.post("/api/v1/tokens", json={"topics": ["*"]})).json()["token"]
    by_key = await open_ws(api_key)
    by_token = await open_ws(query=f"token={token}")
    stream, _ = await sse.connect(api_key)
    other_tenant = await open_ws(other_key)

    started = time.monotonic()
    await sync_to_async(tenant_set_active)(actor=ACTOR, tenant=tenant, active=False)
    codes = await asyncio.gather(closed_code(by_key), closed_code(by_token))
    assert await stream_ended(stream)
    assert codes == [4403, 4403]
    assert time.monotonic() - started < CLOSED_WITHIN

    assert await still_receives(other_tenant, other_key)
    for ws in (by_key, by_token, other_tenant):
        await ws.disconnect()
    await stream.close()


async def test_a_key_that_expires_while_connected_is_closed(tenant):
    soon = timezone.now() + timedelta(seconds=1)
    issued = await sync_to_async(api_key_issue)(actor=ACTOR, tenant=tenant, expires_at=soon)
    ws = await open_ws(issued.secret)
    assert await closed_code(ws) == 4403
    await ws.disconnect()


async def test_a_revoked_key_cannot_reconnect(issued):
    ws = await open_ws(issued.secret)
    await sync_to_async(api_key_revoke)(actor=ACTOR, api_key=issued.api_key)
    assert await closed_code(ws) == 4403
    await ws.disconnect()
    again = WebsocketCommunicator(
        application,
        "/ws/v1/events",
        headers=[(b"authorization", f"Bearer {issued.secret}".encode())],
    )
    await again.connect()
    assert (await again.receive_json_from(timeout=2))["code"] == 4401
    refused = await sse.refusal(issued.secret)
    assert refused.status == 401
    assert "revoked" in json.loads(refused.raw)["detail"]


# Publishing ---------------------------------------------------------------------------------


async def test_publishing_with_a_key_revoked_here_is_refused_at_once(issued):
    # The key is in this process's cache (EVENTHUB_KEY_CACHE_SECONDS, 2 s by default) after a
    # first request; api_key_revoke empties that cache, so the very next request is refused.
    assert (await publish(issued.secret)).status_code == 202
    await sync_to_async(api_key_revoke)(actor=ACTOR, api_key=issued.api_key)
    response = await publish(issued.secret)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "revoked" in response.json()["detail"]


async def test_publishing_with_a_key_suspended_here_is_refused_at_once(issued, tenant):
    assert (await publish(issued.secret)).status_code == 202
    await sync_to_async(tenant_set_active)(actor=ACTOR, tenant=tenant, active=False)
    response = await publish(issued.secret)
    assert response.status_code == 403
    assert "suspended" in response.json()["detail"]


async def revoke_elsewhere(api_key: ApiKey) -> None:
    """Revokes as another process would (its own cache is emptied, not this one's)."""
    await ApiKey.objects.filter(pk=api_key.pk).aupdate(revoked_at=timezone.now())


async def test_a_key_revoked_by_another_process_is_refused_at_once_without_a_key_cache(
    issued, settings
):
    settings.EVENTHUB_KEY_CACHE_SECONDS = 0
    assert (await publish(issued.secret)).status_code == 202
    await revoke_elsewhere(issued.api_key)
    assert (await publish(issued.secret)).status_code == 401


async def test_a_key_revoked_by_another_process_is_refused_once_the_key_cache_expires(
    issued, settings
):
    settings.EVENTHUB_KEY_CACHE_SECONDS = 0.5
    assert (await publish(issued.secret)).status_code == 202
    await revoke_elsewhere(issued.api_key)
    deadline = time.monotonic() + settings.EVENTHUB_KEY_CACHE_SECONDS + 1
    while (await publish(issued.secret)).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still publishes after the cache period"
        await asyncio.sleep(0.05)
