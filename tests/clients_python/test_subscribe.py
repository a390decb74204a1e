"""AsyncClient against the real hub: coroutine publishing, and subscriptions over WebSocket
and SSE that answer pings, refresh their token, report a gap, and survive a server restart
with no event missed or repeated."""

import asyncio

import pytest
from eventhub_client import AsyncClient, EventsMissed, SubscriptionClosed

from tests.e2e.conftest import HEARTBEAT, STALE_TIMEOUT, eventually

pytestmark = pytest.mark.e2e

TRANSPORTS = ["websocket", "sse"]


@pytest.fixture(scope="module")
def tenant(hub):
    return hub.tenant()


async def take(subscription, count: int, within: float = 10.0) -> list[dict]:
    """The next `count` events of a subscription; fails after `within` seconds."""

    async def collect():
        return [await anext(subscription) for _ in range(count)]

    return await asyncio.wait_for(collect(), within)


async def welcomed(subscription, within: float = 10.0) -> None:
    """Starts a subscription and waits until the hub has welcomed it."""
    await asyncio.wait_for(subscription.welcomed(), within)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_subscriber_gets_what_is_published_and_outlives_heartbeats(hub, tenant, transport):
    async with AsyncClient(hub.url, key=tenant.key) as client:
        topic = f"live.{transport}"
        async with client.subscribe([topic], transport=transport) as subscription:
            await welcomed(subscription)
            first = await client.publish(topic, {"n": 1}, type="created")
            # Longer than the stale timeout: only answered pings keep a WebSocket open.
            await asyncio.sleep(STALE_TIMEOUT + HEARTBEAT)
            await client.publish_batch([(topic, {"n": 2}), (topic, {"n": 3})])
            events = await take(subscription, 3)

    assert [e["data"]["n"] for e in events] == [1, 2, 3]
    assert events[0]["id"] == first["id"]
    assert events[0]["event"] == "created"
    assert subscription.reconnects == 0
    assert subscription.last_event_id == events[-1]["id"]


async def test_async_history_and_token(hub, tenant):
    async with AsyncClient(hub.url, key=tenant.key) as client:
        published = await client.publish_batch([("ahist", n) for n in range(5)])
        issued = await client.token("ahist", ttl=60, user="ada")

        async def logged():
            events = [e async for e in client.history(topic="ahist", page_size=2)]
            return events if len(events) == 5 else None

        events = await eventually(logged, 10, "5 events in the log")

    assert [e["id"] for e in events] == [e["id"] for e in published]
    assert issued["token"]
    assert issued["id"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_gap_the_hub_cannot_replay_is_reported(hub, tenant, transport):
    async with AsyncClient(hub.url, key=tenant.key) as client:
        # An id of no event the hub knows: it cannot say what came after it.
        subscription = client.subscribe(["gap"], last_event_id="7-nosuch", transport=transport)
        async with subscription:
            with pytest.raises(EventsMissed) as missed:
                await asyncio.wait_for(anext(subscription), 10)
            assert missed.value.last_event_id == "7-nosuch"
            # The subscription goes on after the caller has handled the gap.
            await client.publish("gap", "after")
            [event] = await take(subscription, 1)
        assert event["data"] == "after"

        gaps = []
        resumed = client.subscribe(
            ["gap"], last_event_id="7-nosuch", transport=transport, on_gap=lambda *g: gaps.append(g)
        )
        async with resumed:
            await welcomed(resumed)
            await client.publish("gap", "again")
            [event] = await take(resumed, 1)
    assert event["data"] == "again"
    assert [g[0] for g in gaps] == ["7-nosuch"]
    assert gaps[0][1]["recovered"] is False


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_subscription_raises_subscription_closed(hub, tenant, transport):
    async with AsyncClient(hub.url, token="not-a-token") as client:
        subscription = client.subscribe(["t"], transport=transport)
        async with subscription:
            with pytest.raises(SubscriptionClosed) as closed:
                await asyncio.wait_for(anext(subscription), 10)
    assert closed.value.code in (4401, 4000 + 401)


async def test_subscribers_with_a_token_function_go_on_past_the_first_tokens_expiry(hub, tenant):
    async with AsyncClient(hub.url, key=tenant.key) as publisher:
        issued = []

        async def token():
            issued.append(await publisher.token(["renewed"], ttl=2))
            return issued[-1]

        async with AsyncClient(hub.url, token=token) as subscriber:
            ws = subscriber.subscribe(["renewed"], transport="websocket")
            sse = subscriber.subscribe(["renewed"], transport="sse")
            async with ws, sse:
                await asyncio.gather(welcomed(ws), welcomed(sse))
                await publisher.publish("renewed", 1)
                await asyncio.sleep(3.5)  # past the first tokens' expiry
                await publisher.publish("renewed", 2)
                got = await asyncio.gather(take(ws, 2), take(sse, 2))

    assert [[e["data"] for e in events] for events in got] == [[1, 2], [1, 2]]
    assert ws.reconnects == 0, "a WebSocket refreshes its token in place"
    assert len(issued) >= 4


async def test_subscribers_survive_a_server_restart_with_no_gap_and_no_duplicate(
    restartable_hub,
):
    server = restartable_hub
    tenant = server.tenant()
    async with AsyncClient(server.url, key=tenant.key) as client:
        subscriptions = [
            client.subscribe(["restart.*"], transport=t, min_delay=0.1, max_delay=0.5)
            for t in TRANSPORTS
        ]
        for subscription in subscriptions:
            await welcomed(subscription)
        before = [await client.publish("restart.a", n) for n in range(5)]
        got_before = await asyncio.gather(*(take(s, 5) for s in subscriptions))

        # Whatever is published before a subscriber is back comes from the persisted log.
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        during = await client.publish_batch([("restart.b", n) for n in range(5, 10)])
        got_after = await asyncio.gather(*(take(s, 5, within=20) for s in subscriptions))
        for subscription in subscriptions:
            await subscription.aclose()

    expected = [e["id"] for e in before + during]
    for first, second, subscription in zip(got_before, got_after, subscriptions, strict=True):
        assert [e["id"] for e in first + second] == expected
        assert subscription.reconnects >= 1
        assert subscription.welcome["recovered"] is True, "resumed from its last id"
