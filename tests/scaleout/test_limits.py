"""A tenant's limits hold for the whole hub, not per process: two web processes on one Redis
share the publish rate bucket and the count of live connections."""

import asyncio
import secrets
import time

import httpx
import pytest
import redis.asyncio as aioredis

from tests.clients import SseClient, WsClient, sse_open, ws_connect

pytestmark = pytest.mark.e2e

RATE = 5
MAX_CONNECTIONS = 2


@pytest.fixture(scope="module")
def cluster(make_module_cluster):
    """Two webs that the module's tests share; none of them stops a process."""
    cluster = make_module_cluster()
    cluster.web_a, cluster.web_b = cluster.start_side_by_side("web", "web")
    return cluster


@pytest.fixture
def hub(cluster):
    """The module's webs with a limited tenant and another one, both the test's own: the
    buckets and counts it sees are its own doing."""
    cluster.limited, cluster.other = cluster.tenant_keys(
        (f"limited-{secrets.token_hex(4)}", "--publish-rate", str(RATE),
         "--max-connections", str(MAX_CONNECTIONS)),
        (f"other-{secrets.token_hex(4)}", "--publish-rate", str(RATE)),
    )  # fmt: skip
    return cluster


async def wait_for(check, within: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (result := await check()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)
    return result


# Publish rate -------------------------------------------------------------------------------


async def test_the_publish_rate_is_shared_by_every_process(hub):
    webs = [hub.web_a, hub.web_b]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {hub.limited}"}) as client:
        for web in webs:  # connections and scripts warmed up; stats take nothing from the bucket
            assert (await client.get(f"{web.url}/api/v1/stats")).status_code == 200
        started = time.monotonic()
        responses = []
        for i in range(4 * RATE):
            web = webs[i % 2]
            event = {"topic": "burst", "data": i}
            responses.append((web, await client.post(f"{web.url}/api/v1/events", json=event)))
        elapsed = time.monotonic() - started

        statuses = [r.status_code for _, r in responses]
        assert set(statuses) == {202, 429}, statuses
        assert statuses[:RATE] == [202] * RATE, statuses
        # One bucket of RATE (plus what refilled meanwhile), not one per process (2 * RATE).
        assert statuses.count(202) <= RATE + int(elapsed * RATE), (statuses, elapsed)
        refused = [(web, r) for web, r in responses if r.status_code == 429]
        assert {web.port for web, _ in refused} == {hub.web_a.port, hub.web_b.port}
        for _, response in refused:
            assert int(response.headers["Retry-After"]) >= 1
            assert "rate" in response.json()["detail"].lower()

        # Another tenant's bucket is its own, on either process.
        one = {"topic": "t", "data": "one more"}
        other = {"Authorization": f"Bearer {hub.other}"}
        for web in webs:
            response = await client.post(f"{web.url}/api/v1/events", json=one, headers=other)
            assert response.status_code == 202

        # After Retry-After the shared bucket has refilled: a whole burst passes, split across
        # the processes (a batch on one, single events on the other), and nothing more.
        await asyncio.sleep(max(int(r.headers["Retry-After"]) for _, r in refused))
        started = time.monotonic()
        batch = {"events": [{"topic": "t", "data": i} for i in range(RATE - 1)]}
        spent = await client.post(f"{hub.web_a.url}/api/v1/events/batch", json=batch)
        assert spent.status_code == 202, spent.text
        assert (await client.post(f"{hub.web_b.url}/api/v1/events", json=one)).status_code == 202
        more = []
        while 429 not in more and len(more) < 2 * RATE:
            more.append((await client.post(f"{hub.web_b.url}/api/v1/events", json=one)).status_code)
        elapsed = time.monotonic() - started
        assert 429 in more, more
        # Past the burst, only what refilled while these requests ran (1 per 1/RATE s) passes.
        assert more.count(202) <= int(elapsed * RATE), (more, elapsed)


# Connections --------------------------------------------------------------------------------


async def refused_with(ws: WsClient) -> int:
    """The close code of a WebSocket the hub refuses after accepting it."""
    frame = await ws.next_frame()
    assert frame["type"] == "error", frame
    assert await ws.closed() == frame["code"]
    return frame["code"]


async def test_the_connection_limit_is_shared_by_every_process(hub):
    on_a = await ws_connect(hub.web_a.ws_url, hub.limited)
    on_b = await sse_open(hub.web_b.url, hub.limited)
    assert (await on_a.next_frame())["type"] == "welcome"
    assert (await on_b.next_message())["event"] == "welcome"

    for web in (hub.web_a, hub.web_b):
        third = await ws_connect(web.ws_url, hub.limited)
        assert await refused_with(third) == 4429
        sse = await sse_open(web.url, hub.limited)
        assert sse.response.status_code == 429
        assert int(sse.response.headers["Retry-After"]) >= 1
        await sse.response.aread()
        assert "connections" in sse.response.json()["detail"].lower()
        await sse.close()

    # Another tenant is not counted against this one.
    other = await ws_connect(hub.web_a.ws_url, hub.other)
    assert (await other.next_frame())["type"] == "welcome"
    await other.close()

    # A connection that leaves frees its place for either process.
    await on_a.close()

    async def admitted():
        ws = await ws_connect(hub.web_b.ws_url, hub.limited)
        frame = await ws.next_frame()
        if frame["type"] == "welcome":
            return ws
        await ws.close()
        return None

    again = await wait_for(admitted, 5, "a freed place to be admitted")
    await again.close()
    await on_b.close()


async def attempt(web, key: str, transport: str) -> WsClient | SseClient | None:
    """Connects once; returns the open connection, or None when the tenant is full (WebSocket
    4429, SSE 429: anything else fails the test)."""
    if transport == "websocket":
        ws = await ws_connect(web.ws_url, key)
        frame = await ws.next_frame()
        if frame["type"] == "welcome":
            return ws
        assert (frame["type"], frame.get("code")) == ("error", 4429), frame
        await ws.close()
        return None
    sse = await sse_open(web.url, key)
    if sse.response.status_code == 200:
        assert (await sse.next_message())["event"] == "welcome"
        return sse
    assert sse.response.status_code == 429, sse.response.status_code
    await sse.close()
    return None


async def crowd(hub, key: str, size: int) -> list[WsClient | SseClient]:
    """`size` clients connecting at the same moment, spread over both processes and both
    transports; returns those admitted."""
    webs = (hub.web_a, hub.web_b)
    transports = ("websocket", "websocket", "sse", "sse")
    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(
            *(attempt(webs[i % 2], key, transports[i % 4]) for i in range(size))
        )
    return [client for client in outcomes if client is not None]


async def live_connections(web, key: str) -> int:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as client:
        return sum((await client.get(f"{web.url}/api/v1/stats")).json()["connections"].values())


@pytest.mark.parametrize("limit", [2, 5])
async def test_a_crowd_connecting_at_once_to_both_processes_gets_exactly_the_limit(hub, limit):
    key = hub.tenant_key(f"crowded-{limit}", "--max-connections", str(limit))

    admitted = await crowd(hub, key, 20)
    assert len(admitted) == limit
    assert await live_connections(hub.web_a, key) == limit

    # The refused ones left no count behind, and the admitted ones take theirs away when they
    # leave: a second crowd gets the whole limit again.
    for client in admitted:
        await client.close()

    async def none_left():
        return all([await live_connections(web, key) == 0 for web in (hub.web_a, hub.web_b)])

    await wait_for(none_left, 5, "the connections to be gone on both processes")
    again = await crowd(hub, key, 20)
    assert len(again) == limit
    for client in again:
        await client.close()


async def test_a_crowd_after_redis_lost_the_counts_gets_exactly_the_limit(hub):
    """Redis emptied while connections are open (restarted without persistence, failed over;
    or, as in a test run once, another session's FLUSHDB): each process writes its counts
    again, and connections closing meanwhile do not leave counts below zero behind (-1 was
    read as 0: each such close let one more connection in)."""
    limit = 2
    key = hub.tenant_key("emptied", "--max-connections", str(limit))
    first = await crowd(hub, key, 20)
    assert len(first) == limit
    emptied = aioredis.Redis.from_url(hub.env["REDIS_URL"])
    try:
        await emptied.flushdb()
    finally:
        await emptied.aclose()

    async def counted_again():
        return all([await live_connections(web, key) == limit for web in (hub.web_a, hub.web_b)])

    await wait_for(counted_again, 5, "both processes to see the open connections again")
    assert await crowd(hub, key, 10) == []

    for client in first:
        await client.close()

    async def none_left():
        return all([await live_connections(web, key) == 0 for web in (hub.web_a, hub.web_b)])

    await wait_for(none_left, 5, "the connections to be gone on both processes")
    again = await crowd(hub, key, 20)
    assert len(again) == limit
    for client in again:
        await client.close()
