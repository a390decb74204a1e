"""Several web processes and a persistence worker on Redis and PostgreSQL act as one hub."""

import asyncio

import httpx
import psycopg
import pytest

from tests.clients import publish, sse_open, ws_connect
from tests.scaleout.conftest import PG_DSN

pytestmark = pytest.mark.e2e


async def wait_for(check, within: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
def hub(module_two_webs):
    """The module's two webs and worker (the processes cost seconds to start), with a key of
    a tenant of the test's own: what a test sees is its own doing."""
    module_two_webs.key = module_two_webs.fresh_key()
    return module_two_webs


async def test_an_event_published_on_one_process_reaches_both_transports_on_the_other(hub):
    ws = await ws_connect(hub.web_b.ws_url, hub.key)
    sse = await sse_open(hub.web_b.url, hub.key)
    assert (await ws.next_frame())["type"] == "welcome"
    assert (await sse.next_message())["event"] == "welcome"
    async with httpx.AsyncClient() as client:
        accepted = await publish(client, hub.web_a.url, hub.key, "orders.created", {"n": 1})
    (over_ws,) = await ws.events(1)
    (over_sse,) = await sse.events(1)
    assert over_ws == over_sse
    assert over_ws["id"] == accepted["id"]
    assert over_ws["data"] == {"n": 1}
    await ws.close()
    await sse.close()


async def test_stats_count_connections_of_every_process_whichever_answers(hub):
    on_a = await ws_connect(hub.web_a.ws_url, hub.key)
    on_b = await sse_open(hub.web_b.url, hub.key)
    await on_a.next_frame()
    await on_b.next_message()
    auth = {"Authorization": f"Bearer {hub.key}"}
    async with httpx.AsyncClient(headers=auth) as client:
        for web in (hub.web_a, hub.web_b):
            stats = (await client.get(f"{web.url}/api/v1/stats")).json()
            assert stats["connections"] == {"websocket": 1, "sse": 1}
        await on_a.close()
        await on_b.close()

        async def back_to_zero():
            stats = (await client.get(f"{hub.web_a.url}/api/v1/stats")).json()
            return stats["connections"] == {"websocket": 0, "sse": 0}

        await wait_for(back_to_zero, 5, "connections to fall back to 0")


async def test_events_published_on_two_processes_reach_a_subscriber_once_each_in_seq_order(hub):
    ws = await ws_connect(hub.web_b.ws_url, hub.key)
    await ws.next_frame()

    async def publisher(web, n):
        async with httpx.AsyncClient() as client:
            for i in range(n):
                await publish(client, web.url, hub.key, "load", {"from": web.port, "i": i})

    await asyncio.gather(*(publisher(w, 25) for w in (hub.web_a, hub.web_b, hub.web_a)))
    seqs = [event["seq"] for event in await ws.events(75, within=20)]
    assert seqs == sorted(set(seqs))
    assert seqs == list(range(seqs[0], seqs[0] + 75))
    await ws.close()


async def test_the_worker_persists_what_any_process_accepted(hub):
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {hub.key}"}) as client:
        ids = []
        for i in range(20):
            web = hub.web_a if i % 2 else hub.web_b
            ids.append((await publish(client, web.url, hub.key, "t", i))["id"])

        async def logged():
            page = (await client.get(f"{hub.web_a.url}/api/v1/events?limit=100")).json()
            return [e["id"] for e in page["results"]] == ids

        await wait_for(logged, 10, "the log to hold all 20 events")
        stats = (await client.get(f"{hub.web_b.url}/api/v1/stats")).json()
        assert stats["events"]["accepted"] == 20
        assert stats["events"]["persisted"] == 20
        assert stats["persistence"]["pending"] == 0


def database_connections(database_url: str) -> int:
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchone()
    return count


async def test_database_connections_stay_bounded_however_many_requests_come(
    make_cluster, pg_database, redis_url
):
    # Under ASGI each request runs in a thread of its own: connections kept per thread would
    # pile up (one per request) until PostgreSQL refuses more clients.
    cluster = make_cluster(DATABASE_URL=pg_database, REDIS_URL=redis_url)
    (web,) = cluster.start_side_by_side("web", tenant="acme")
    key = cluster.key
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(150):  # each history page reads the log
            response = await client.get(f"{web.url}/api/v1/events")
            assert response.status_code == 200

    assert database_connections(pg_database) <= 20  # DATABASE_POOL_SIZE, the default
