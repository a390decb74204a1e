"""Nothing answered 202 is lost from the log when a worker is killed or a web process stops,
and Redis outages give clear 503s and then recover without restarts."""

import asyncio
import signal

import httpx
import pytest
import redis

from tests.clients import publish, ws_connect
from tests.scaleout.test_multi_process import wait_for

pytestmark = pytest.mark.e2e


async def burst(web, key: str, count: int, accepted: list[str], progress: asyncio.Event):
    """Publishes `count` events one after another; records the ids answered 202 and stops at
    the first failure (the process went away)."""
    async with httpx.AsyncClient(timeout=5) as client:
        for i in range(count):
            try:
                response = await client.post(
                    f"{web.url}/api/v1/events",
                    json={"topic": "burst", "data": i},
                    headers={"Authorization": f"Bearer {key}"},
                )
            except httpx.HTTPError:
                return
            if response.status_code != 202:
                return
            accepted.append(response.json()["id"])
            if len(accepted) == count // 3:
                progress.set()


async def logged_ids(client: httpx.AsyncClient, web, key: str) -> list[str]:
    ids, url = [], f"{web.url}/api/v1/events?limit=1000"
    while url:
        page = (await client.get(url, headers={"Authorization": f"Bearer {key}"})).json()
        ids += [e["id"] for e in page["results"]]
        url = page["next"]
    return ids


async def test_killing_the_worker_mid_burst_loses_nothing_and_writes_nothing_twice(
    make_cluster, pg_database, redis_url
):
    cluster = make_cluster(DATABASE_URL=pg_database, REDIS_URL=redis_url, EVENTHUB_CLAIM_IDLE="1")
    web, worker = cluster.start_side_by_side("web", "worker", tenant="acme")
    key = cluster.key
    accepted: list[str] = []
    progress = asyncio.Event()
    publishing = asyncio.create_task(burst(web, key, 300, accepted, progress))
    await asyncio.wait_for(progress.wait(), 30)
    worker.signal(signal.SIGKILL)
    worker.wait(10)
    await publishing
    assert len(accepted) == 300
    cluster.start("worker")
    async with httpx.AsyncClient() as client:

        async def all_logged():
            return await logged_ids(client, web, key) == accepted

        await wait_for(all_logged, 30, "every accepted event in the log exactly once")


async def test_sigterm_to_a_web_process_mid_burst_loses_nothing(
    make_cluster, pg_database, redis_url
):
    cluster = make_cluster(DATABASE_URL=pg_database, REDIS_URL=redis_url)
    doomed, survivor, _ = cluster.start_side_by_side("web", "web", "worker", tenant="acme")
    key = cluster.key
    accepted: list[str] = []
    progress = asyncio.Event()
    publishing = asyncio.create_task(burst(doomed, key, 600, accepted, progress))
    await asyncio.wait_for(progress.wait(), 30)
    doomed.signal(signal.SIGTERM)
    await publishing
    assert doomed.wait(30) is not None
    assert accepted, "nothing was accepted before the stop"
    async with httpx.AsyncClient() as client:

        async def all_logged():
            return await logged_ids(client, survivor, key) == accepted

        await wait_for(all_logged, 30, "every accepted event in the log exactly once")


async def test_a_redis_outage_answers_503_then_recovers_without_restarts(
    own_redis, make_cluster, pg_database
):
    cluster = make_cluster(DATABASE_URL=pg_database, REDIS_URL=own_redis.url)
    web, _ = cluster.start_side_by_side("web", "worker", tenant="acme")
    key = cluster.key
    auth = {"Authorization": f"Bearer {key}"}
    subscriber = await ws_connect(web.ws_url, key)
    await subscriber.next_frame()
    async with httpx.AsyncClient(timeout=10) as client:
        before = await publish(client, web.url, key, "t", "before")
        assert (await subscriber.events(1))[0]["id"] == before["id"]

        own_redis.stop()
        down = await client.post(f"{web.url}/api/v1/events", json={"topic": "t", "data": 0},
                                 headers=auth)  # fmt: skip
        assert down.status_code == 503
        assert "detail" in down.json()
        assert (await client.get(f"{web.url}/readyz")).status_code == 503

        own_redis.start()

        async def publish_works():
            response = await client.post(
                f"{web.url}/api/v1/events", json={"topic": "t", "data": "after"}, headers=auth
            )
            return response.json() if response.status_code == 202 else None

        after = await wait_for(publish_works, 20, "publishing to work again")
        assert (await client.get(f"{web.url}/readyz")).status_code == 200
        # The subscriber was kept and gets live events again, with nothing in between.
        (live,) = await subscriber.events(1, within=15)
        assert live["id"] == after["id"]

        async def both_logged():
            return await logged_ids(client, web, key) == [before["id"], after["id"]]

        await wait_for(both_logged, 20, "the log to hold both events")
    await subscriber.close()


async def test_an_emptied_redis_never_reuses_an_event_id(make_cluster, pg_database, redis_url):
    cluster = make_cluster(DATABASE_URL=pg_database, REDIS_URL=redis_url)
    web, _ = cluster.start_side_by_side("web", "worker", tenant="acme")
    key = cluster.key
    async with httpx.AsyncClient(timeout=10) as client:
        first = [(await publish(client, web.url, key, "t", i)) for i in range(3)]

        async def logged():
            return len(await logged_ids(client, web, key)) == 3

        await wait_for(logged, 10, "the first events in the log")
        redis.Redis.from_url(redis_url).flushdb()
        then = await publish(client, web.url, key, "t", "after flush")
        assert then["seq"] > first[-1]["seq"]
        assert then["id"] not in {e["id"] for e in first}

        async def all_logged():
            return len(await logged_ids(client, web, key)) == 4

        await wait_for(all_logged, 20, "the worker to recreate its group and persist")
