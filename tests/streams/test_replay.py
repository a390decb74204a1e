"""Resuming a subscription with last_event_id: from the replay buffer or the persisted log."""

import asyncio
import json
from urllib.parse import urlencode

import pytest
from channels.testing import WebsocketCommunicator

from eventhub.asgi import application
from tests.conftest import asgi_client

pytestmark = pytest.mark.django_db(transaction=True)


async def publish_many(key: str, count: int, topic=lambda i: "t") -> list[dict]:
    events = [{"topic": topic(i), "data": {"n": i}} for i in range(count)]
    async with asgi_client(key) as client:
        response = await client.post("/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.content
    return response.json()["events"]


async def wait_until_logged(key: str, count: int, within: float = 5.0) -> None:
    """Waits (bounded) until the log writer has flushed `count` events of the key's tenant."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with asgi_client(key) as client:
        while True:
            stats = (await client.get("/api/v1/stats")).json()
            if stats["events"]["persisted"] >= count and stats["persistence"]["pending"] == 0:
                return
            assert loop.time() < deadline, f"log not flushed in {within}s: {stats}"
            await asyncio.sleep(0.02)


async def resume(key: str, **params: str) -> tuple[WebsocketCommunicator, dict]:
    ws = WebsocketCommunicator(
        application,
        f"/ws/v1/events?{urlencode(params)}",
        headers=[(b"authorization", f"Bearer {key}".encode())],
    )
    connected, _ = await ws.connect()
    assert connected
    welcome = await ws.receive_json_from(timeout=2)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def frames(ws: WebsocketCommunicator, count: int) -> list[dict]:
    return [await ws.receive_json_from(timeout=2) for _ in range(count)]


async def assert_live(key: str, ws: WebsocketCommunicator) -> None:
    """Nothing more was replayed, and a new event arrives live."""
    assert await ws.receive_nothing(timeout=0.1)
    async with asgi_client(key) as client:
        response = await client.post("/api/v1/events", json={"topic": "t", "data": "live"})
    assert (await ws.receive_json_from(timeout=2))["id"] == response.json()["id"]
    assert await ws.receive_nothing(timeout=0.05)


async def test_it_replays_exactly_the_missed_events_then_goes_live(api_key):
    accepted = await publish_many(api_key, 50)
    ws, welcome = await resume(api_key, last_event_id=accepted[19]["id"])
    assert welcome["recovered"] is True
    replayed = await frames(ws, 30)
    assert [f["id"] for f in replayed] == [a["id"] for a in accepted[20:]]
    assert [f["seq"] for f in replayed] == list(range(21, 51))
    assert [f["data"] for f in replayed] == [{"n": i} for i in range(20, 50)]
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_a_subscriber_that_missed_nothing_is_recovered_with_nothing_to_replay(api_key):
    accepted = await publish_many(api_key, 3)
    ws, welcome = await resume(api_key, last_event_id=accepted[-1]["id"])
    assert welcome["recovered"] is True
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_the_replay_keeps_only_the_topics_subscribed_to(api_key):
    accepted = await publish_many(api_key, 10, topic=lambda i: "orders.x" if i % 2 else "users.x")
    ws, welcome = await resume(api_key, last_event_id=accepted[0]["id"], topics="orders.*")
    assert welcome["recovered"] is True
    replayed = await frames(ws, 5)
    assert [f["seq"] for f in replayed] == [2, 4, 6, 8, 10]
    assert await ws.receive_nothing(timeout=0.1)
    await ws.disconnect()


async def test_events_older_than_the_replay_buffer_come_from_the_log(api_key, settings):
    settings.EVENTHUB_REPLAY_WINDOW = 10
    accepted = await publish_many(api_key, 30)
    await wait_until_logged(api_key, 30)
    ws, welcome = await resume(api_key, last_event_id=accepted[4]["id"])
    assert welcome["recovered"] is True
    replayed = await frames(ws, 25)
    assert [f["id"] for f in replayed] == [a["id"] for a in accepted[5:]]
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_events_from_the_log_are_the_same_frames_as_live_ones(api_key, settings):
    settings.EVENTHUB_REPLAY_WINDOW = 2
    watcher, _ = await resume(api_key)
    async with asgi_client(api_key) as client:
        for data in ({"b": 1, "a": [1.5, None]}, "é ✓ \u2028", 10**15, [], True):
            response = await client.post("/api/v1/events", json={"topic": "t", "data": data})
            assert response.status_code == 202
    live = [await watcher.receive_from(timeout=2) for _ in range(5)]
    await watcher.disconnect()
    await wait_until_logged(api_key, 5)
    first = json.loads(live[0])
    ws, welcome = await resume(api_key, last_event_id=first["id"])
    assert welcome["recovered"] is True
    assert [await ws.receive_from(timeout=2) for _ in range(4)] == live[1:]
    await ws.disconnect()


async def test_too_many_missed_events_are_not_replayed(api_key, settings):
    settings.EVENTHUB_REPLAY_MAX = 5
    accepted = await publish_many(api_key, 20)
    ws, welcome = await resume(api_key, last_event_id=accepted[9]["id"])
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_exactly_the_most_missed_events_allowed_are_replayed(api_key, settings):
    settings.EVENTHUB_REPLAY_MAX = 5
    accepted = await publish_many(api_key, 20)
    ws, welcome = await resume(api_key, last_event_id=accepted[14]["id"])
    assert welcome["recovered"] is True
    assert [f["seq"] for f in await frames(ws, 5)] == [16, 17, 18, 19, 20]
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_too_many_missed_events_are_not_replayed_from_the_log_either(api_key, settings):
    settings.EVENTHUB_REPLAY_WINDOW = 5
    settings.EVENTHUB_REPLAY_MAX = 8
    accepted = await publish_many(api_key, 20)
    await wait_until_logged(api_key, 20)
    ws, welcome = await resume(api_key, last_event_id=accepted[4]["id"])
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()


@pytest.mark.parametrize(
    "last_event_id",
    [
        pytest.param(lambda accepted: "999-" + accepted[0]["id"].split("-")[1], id="future-seq"),
        pytest.param(lambda accepted: "5-zzzzzz", id="other-epoch"),
        pytest.param(lambda accepted: "0-" + accepted[0]["id"].split("-")[1], id="seq-zero"),
    ],
)
async def test_an_unknown_event_id_is_not_recovered(api_key, last_event_id):
    accepted = await publish_many(api_key, 10)
    ws, welcome = await resume(api_key, last_event_id=last_event_id(accepted))
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_an_event_id_of_a_tenant_without_events_is_not_recovered(api_key):
    ws, welcome = await resume(api_key, last_event_id="1-abcdef")
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_another_tenants_event_id_recovers_nothing_of_theirs(api_key, other_key):
    theirs = await publish_many(other_key, 5)
    await publish_many(api_key, 5)
    ws, welcome = await resume(api_key, last_event_id=theirs[1]["id"])
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()
