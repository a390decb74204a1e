"""/api/v1/stats counts live connections: up as clients connect, back to zero however they
leave, including clients that vanish without a goodbye."""

import pytest

from tests.e2e.conftest import STALE_TIMEOUT, eventually, publish, stats

pytestmark = pytest.mark.e2e

RELEASED_WITHIN = 10.0


async def connections(api, hub, tenant) -> dict:
    return (await stats(api, hub, tenant.key))["connections"]


async def wait_for_connections(api, hub, tenant, expected: dict) -> None:
    async def counted():
        return await connections(api, hub, tenant) == expected

    await eventually(counted, RELEASED_WITHIN, f"connections to be {expected}")


async def test_connection_counts_rise_with_each_subscriber(hub, tenant, api, subscribers):
    assert await connections(api, hub, tenant) == {"websocket": 0, "sse": 0}
    opened = []
    for expected in ({"websocket": 1, "sse": 0}, {"websocket": 2, "sse": 0}):
        opened.append(await subscribers.ws(hub, tenant.key))
        await opened[-1].welcome()
        assert await connections(api, hub, tenant) == expected
    for expected in ({"websocket": 2, "sse": 1}, {"websocket": 2, "sse": 2}):
        opened.append(await subscribers.sse(hub, tenant.key))
        await opened[-1].welcome()
        assert await connections(api, hub, tenant) == expected


async def test_counts_fall_to_zero_after_clients_close_cleanly(hub, tenant, api, subscribers):
    clients = [await subscribers.ws(hub, tenant.key) for _ in range(3)]
    clients += [await subscribers.sse(hub, tenant.key) for _ in range(2)]
    for client in clients:
        await client.welcome()
    assert await connections(api, hub, tenant) == {"websocket": 3, "sse": 2}

    for client in clients:
        await client.close()

    await wait_for_connections(api, hub, tenant, {"websocket": 0, "sse": 0})


async def test_counts_fall_to_zero_after_clients_drop_their_connections(
    hub, tenant, api, subscribers
):
    websockets_ = [await subscribers.ws(hub, tenant.key) for _ in range(3)]
    streams = [await subscribers.sse(hub, tenant.key) for _ in range(2)]
    for client in (*websockets_, *streams):
        await client.welcome()
    assert await connections(api, hub, tenant) == {"websocket": 3, "sse": 2}

    for ws in websockets_:
        ws.abort()  # no close frame: the TCP connection just goes
    await wait_for_connections(api, hub, tenant, {"websocket": 0, "sse": 2})
    for sse in streams:
        await sse.close()  # the body is unread: the socket is dropped mid-stream

    await wait_for_connections(api, hub, tenant, {"websocket": 0, "sse": 0})


async def test_the_others_keep_receiving_after_some_clients_drop(hub, tenant, api, subscribers):
    dropped = [await subscribers.ws(hub, tenant.key) for _ in range(3)]
    staying_ws = await subscribers.ws(hub, tenant.key)
    staying_sse = await subscribers.sse(hub, tenant.key)
    for client in (*dropped, staying_ws, staying_sse):
        await client.welcome()

    for ws in dropped:
        ws.abort()
    accepted = [await publish(api, hub, tenant.key, "after.drop", i) for i in range(5)]

    ids = [a["id"] for a in accepted]
    assert [e["id"] for e in await staying_ws.events(5)] == ids
    assert [e["id"] for e in await staying_sse.events(5)] == ids
    await wait_for_connections(api, hub, tenant, {"websocket": 1, "sse": 1})


async def test_a_reaped_websocket_no_longer_counts(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key, answer_pings=False)
    await ws.welcome()
    assert await connections(api, hub, tenant) == {"websocket": 1, "sse": 0}

    assert await ws.closed(within=STALE_TIMEOUT + 5) == 4408

    await wait_for_connections(api, hub, tenant, {"websocket": 0, "sse": 0})


async def test_many_connect_and_drop_cycles_leave_no_ghost_connections(
    hub, tenant, api, subscribers
):
    for _ in range(5):
        ws = await subscribers.ws(hub, tenant.key)
        sse = await subscribers.sse(hub, tenant.key)
        await ws.welcome()
        await sse.welcome()
        ws.abort()
        await sse.close()
    # Some that never wait for their welcome.
    for _ in range(5):
        (await subscribers.ws(hub, tenant.key)).abort()

    await wait_for_connections(api, hub, tenant, {"websocket": 0, "sse": 0})
