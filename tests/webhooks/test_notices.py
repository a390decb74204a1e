"""A presence change the tracker makes goes, as a notice, to the engine that makes its webhook
deliveries; the notice's body is the contract's."""

import asyncio
import json

from streams.delivery.hub import Hub
from streams.presence.changes import JOIN, VACATED, Change
from tests.streams.test_hub import FakeBackend
from webhooks.notices import WebhookNotice


async def test_the_hub_hands_each_presence_change_to_the_engine_as_a_webhook_notice():
    backend = FakeBackend()
    hub = Hub(backend)
    try:
        await hub._presence_notify(Change(JOIN, 7, "room", "ann", {"n": 1}))
        await hub._presence_notify(Change(VACATED, 7, "room"))
        await asyncio.sleep(0)
    finally:
        await hub.shutdown()

    assert [(n.tenant_id, n.type, n.topic, n.user) for n in backend.notices] == [
        (7, "join", "room", "ann"),
        (7, "vacated", "room", None),
    ]
    assert len({n.msg_id for n in backend.notices}) == 2


def test_a_notice_survives_the_log_stream_and_has_the_contracts_body():
    notice = WebhookNotice.build(tenant_id=1, type="leave", topic="room", user="ann")

    again = WebhookNotice.from_json(notice.to_json())

    assert again == notice
    assert json.loads(again.body()) == {
        "type": "leave",
        "topic": "room",
        "user": "ann",
        "ts": notice.ts,
    }
    occupied = WebhookNotice.build(tenant_id=1, type="occupied", topic="room")
    assert json.loads(occupied.body()) == {"type": "occupied", "topic": "room", "ts": occupied.ts}
