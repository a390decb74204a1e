"""The server keeps connections alive with heartbeats and reaps WebSocket clients that fell
silent."""

import asyncio
import time

import pytest

from tests.e2e.conftest import HEARTBEAT, STALE_TIMEOUT, eventually, publish

pytestmark = pytest.mark.e2e

# Heartbeats due within this many intervals, with room for a loaded machine.
FEW_INTERVALS = 10 * HEARTBEAT


async def test_a_websocket_gets_ping_frames_every_heartbeat(hub, tenant, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()

    async def three_pings():
        return ws.pings >= 3

    await eventually(three_pings, FEW_INTERVALS, "three {'type': 'ping'} frames")


async def test_an_sse_stream_gets_ping_comments_every_heartbeat(hub, tenant, subscribers):
    sse = await subscribers.sse(hub, tenant.key)
    await sse.welcome()

    async def three_pings():
        return sse.pings >= 3

    await eventually(three_pings, FEW_INTERVALS, "three ': ping' comment lines")
    assert sse.messages.empty(), "a ping comment must not surface as a message"


async def test_it_answers_a_client_ping_with_pong(hub, tenant, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()

    await ws.send({"type": "ping"})

    assert await ws.next_frame() == {"type": "pong"}


async def test_a_silent_websocket_is_closed_with_4408_after_the_stale_timeout(
    hub, tenant, subscribers
):
    ws = await subscribers.ws(hub, tenant.key, answer_pings=False)
    await ws.welcome()
    opened = time.monotonic()

    code = await ws.closed(within=STALE_TIMEOUT + 5)

    assert code == 4408
    assert ws.received[-1]["type"] == "error"
    assert ws.received[-1]["code"] == 4408
    assert ws.received[-1]["detail"]
    assert time.monotonic() - opened >= STALE_TIMEOUT * 0.8
    assert ws.pings > 0, "the server pinged it first"


# The two usual spellings are marked alive by daphne's protocol itself (daphne_protocol, onMessage);
# any other frame goes through the consumer.
@pytest.mark.parametrize("pong", ['{"type":"pong"}', '{"type": "pong"}', '{"type":"pong","n":1}'])
async def test_a_client_that_answers_pings_stays_open_past_the_stale_timeout(
    hub, tenant, api, subscribers, pong
):
    ws = await subscribers.ws(hub, tenant.key, answer_pings=pong)
    await ws.welcome()

    async def open_for_twice_the_stale_timeout():
        return ws.pings * HEARTBEAT >= 2 * STALE_TIMEOUT

    await eventually(open_for_twice_the_stale_timeout, 4 * STALE_TIMEOUT + 5, "enough pings")
    assert ws.open
    accepted = await publish(api, hub, tenant.key, "still.there", 1)
    (event,) = await ws.events(1)
    assert event["id"] == accepted["id"]


async def test_any_client_frame_keeps_a_websocket_alive(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key, answer_pings=False)
    await ws.welcome()
    started = time.monotonic()

    # The client ignores the server's pings but sends its own frames, well within the timeout.
    while time.monotonic() - started < 2 * STALE_TIMEOUT:
        await ws.send({"type": "ping"})
        assert await ws.next_frame() == {"type": "pong"}
        await asyncio.sleep(STALE_TIMEOUT / 4)

    assert ws.open
    accepted = await publish(api, hub, tenant.key, "still.there", 1)
    (event,) = await ws.events(1)
    assert event["id"] == accepted["id"]


async def test_an_sse_stream_is_not_reaped_for_silence(hub, tenant, api, subscribers):
    sse = await subscribers.sse(hub, tenant.key)
    await sse.welcome()

    async def open_for_twice_the_stale_timeout():
        return sse.pings * HEARTBEAT >= 2 * STALE_TIMEOUT

    await eventually(open_for_twice_the_stale_timeout, 4 * STALE_TIMEOUT + 5, "enough pings")
    accepted = await publish(api, hub, tenant.key, "still.there", 1)
    (event,) = await sse.events(1)
    assert event["id"] == accepted["id"]
    assert sse.open


async def test_a_frame_that_is_not_a_json_object_closes_the_websocket_with_4400(
    hub, tenant, subscribers
):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()

    await ws.connection.send("this is not json")

    assert await ws.closed() == 4400
    assert ws.received[-1]["code"] == 4400


async def test_a_reaped_client_does_not_disturb_the_others(hub, tenant, api, subscribers):
    silent = await subscribers.ws(hub, tenant.key, answer_pings=False)
    lively = await subscribers.ws(hub, tenant.key)
    await silent.welcome()
    await lively.welcome()

    assert await silent.closed(within=STALE_TIMEOUT + 5) == 4408

    accepted = await publish(api, hub, tenant.key, "after.reaping", 1)
    (event,) = await lively.events(1)
    assert event["id"] == accepted["id"]
