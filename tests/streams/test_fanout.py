"""The fan-out design: one channel-layer message per process per event, however many local
connections subscribe, and the frame encoded once."""

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from eventhub.asgi import application
from streams.groups import tenant_group
from tests.conftest import asgi_client

pytestmark = pytest.mark.django_db(transaction=True)


async def test_one_layer_message_reaches_every_local_subscriber(api_key, tenant, monkeypatch):
    subscribers = []
    for topics in ("*", "orders.*", "orders.created") * 7:
        ws = WebsocketCommunicator(
            application,
            f"/ws/v1/events?topics={topics}",
            headers=[(b"authorization", f"Bearer {api_key}".encode())],
        )
        await ws.connect()
        assert (await ws.receive_json_from(timeout=2))["type"] == "welcome"
        subscribers.append(ws)
    layer = get_channel_layer()
    assert len(layer.groups[tenant_group(tenant.pk)]) == 1, "one member: this process's hub"
    sent = []
    original = type(layer).send

    async def counting_send(self, channel, message):
        sent.append(channel)
        return await original(self, channel, message)

    monkeypatch.setattr(type(layer), "send", counting_send)
    async with asgi_client(api_key) as client:
        response = await client.post("/api/v1/events", json={"topic": "orders.created", "data": 1})
    assert response.status_code == 202
    frames = [await ws.receive_from(timeout=2) for ws in subscribers]
    assert len(sent) == 1
    assert len(set(frames)) == 1, "every subscriber got the same frame"
    for ws in subscribers:
        await ws.disconnect()
    assert tenant_group(tenant.pk) not in layer.groups, "the hub left the group when all left"
