"""What production does to the hub: a database outage (the log lags within a bound and catches
up), a log with no worker (the bound holds), Redis restarting with and without persistence,
and minute-long outages of either: no 500, nothing lost or doubled that the hub accepted while
its log could keep it."""

import asyncio
import time

import httpx
import pytest

from tests.clients import publish, ws_connect
from tests.processes import base_env, manage
from tests.scaleout.conftest import Cluster, OwnRedis
from tests.scaleout.test_crash_safety import logged_ids as logged_ids_now
from tests.scaleout.test_multi_process import wait_for

pytestmark = pytest.mark.e2e

BOUND = 12  # EVENTHUB_LOG_BACKLOG_MAX in the tests of the bound


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def post(client: httpx.AsyncClient, url: str, key: str, data) -> httpx.Response:
    return await client.post(
        f"{url}/api/v1/events", json={"topic": "t", "data": data}, headers=auth(key)
    )


async def stats(client: httpx.AsyncClient, url: str, key: str) -> dict:
    response = await client.get(f"{url}/api/v1/stats", headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def logged_ids(client: httpx.AsyncClient, web, key: str) -> list[str] | None:
    """The log's ids, oldest first; None while it cannot be read yet (503 just after the
    database came back: the pool reconnects on its own schedule)."""
    probe = await client.get(f"{web.url}/api/v1/events?limit=1", headers=auth(key))
    if probe.status_code == 503:
        return None
    return await logged_ids_now(client, web, key)


def refused_for_the_backlog(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert "log" in response.json()["detail"]


# The embedded default on PostgreSQL ------------------------------------------------------------


@pytest.fixture
def embedded_on_own_postgres(own_postgres, tmp_path):
    """One web process, no Redis, on a PostgreSQL cluster the test may stop; one tenant."""
    env = base_env(
        DATABASE_URL=own_postgres.url,
        EVENTHUB_LOG_BACKLOG_MAX=str(BOUND),
        EVENTHUB_HEARTBEAT_INTERVAL="1",
        EVENTHUB_STALE_TIMEOUT="10",
    )
    manage(env, "migrate", "--no-input")
    cluster = Cluster(env, tmp_path)
    (web,) = cluster.start_side_by_side("web", tenant="acme")
    yield web, cluster.key, own_postgres
    cluster.stop_all()


async def test_while_the_database_is_down_events_are_accepted_up_to_the_bound_then_logged(
    embedded_on_own_postgres,
):
    web, key, postgres = embedded_on_own_postgres
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        before = await publish(client, web.url, key, "t", "before")  # the key is read here
        subscriber = await ws_connect(web.ws_url, key)
        await subscriber.welcome()

        async def before_logged():
            return await logged_ids(client, web, key) == [before["id"]]

        await wait_for(before_logged, 10, "the first event in the log")
        postgres.stop()
        accepted = [before["id"]]
        for n in range(BOUND):
            response = await post(client, web.url, key, n)
            assert response.status_code == 202, (n, response.text)
            accepted.append(response.json()["id"])
        over = await post(client, web.url, key, "over the bound")

        refused_for_the_backlog(over)
        live = await subscriber.events(BOUND)
        assert [e["id"] for e in live] == accepted[1:]
        assert (await client.get(f"{web.url}/readyz")).status_code == 503
        during = await stats(client, web.url, key)
        assert during["persistence"]["pending"] == BOUND
        assert during["persistence"]["lag_seconds"] > 0
        history = await client.get(f"{web.url}/api/v1/events", headers=auth(key))
        assert history.status_code == 503, history.text
        assert "retry-after" in history.headers
        token = await client.post(f"{web.url}/api/v1/tokens", json={}, headers=auth(key))
        assert token.status_code == 201  # no database needed

        postgres.start()

        async def all_logged():
            return await logged_ids(client, web, key) == accepted

        await wait_for(all_logged, 30, "every accepted event in the log, once, in order")
        assert (await stats(client, web.url, key))["persistence"]["pending"] == 0
        assert (await post(client, web.url, key, "after")).status_code == 202
        assert (await client.get(f"{web.url}/readyz")).status_code == 200
    await subscriber.close()


# Redis: the worker's stream is bounded too ----------------------------------------------------


async def test_with_no_worker_the_log_stream_is_bounded_and_drains_when_one_runs(
    make_cluster, pg_database, redis_url
):
    cluster = make_cluster(
        DATABASE_URL=pg_database, REDIS_URL=redis_url, EVENTHUB_LOG_BACKLOG_MAX=str(BOUND)
    )
    (web,) = cluster.start_side_by_side("web", tenant="acme")
    key = cluster.key
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        accepted = [(await publish(client, web.url, key, "t", n))["id"] for n in range(BOUND)]

        refused_for_the_backlog(await post(client, web.url, key, "over"))
        assert (await stats(client, web.url, key))["persistence"]["pending"] == BOUND

        cluster.start("worker")

        async def drained():
            return await logged_ids(client, web, key) == accepted

        await wait_for(drained, 30, "the worker to write the backlog")
        assert (await post(client, web.url, key, "after")).status_code == 202


# Redis restarts -------------------------------------------------------------------------------


@pytest.mark.parametrize("persistent", [True, False], ids=["durable", "not-durable"])
async def test_after_a_redis_restart_publishing_resumes_and_subscribers_learn_the_truth(
    make_cluster, pg_database, tmp_path, persistent
):
    redis_server = OwnRedis(tmp_path, persistent=persistent)
    redis_server.start()
    cluster = make_cluster(DATABASE_URL=pg_database, REDIS_URL=redis_server.url)
    try:
        web, worker = cluster.start_side_by_side("web", "worker", tenant="acme")
        key = cluster.key
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            logged = [await publish(client, web.url, key, "t", n) for n in range(3)]

            async def three_logged():
                return len(await logged_ids(client, web, key)) == 3

            await wait_for(three_logged, 20, "the first events in the log")
            # The next two stay in the stream: without persistence the restart loses them.
            worker.stop()
            unlogged = [await publish(client, web.url, key, "t", n) for n in range(3, 5)]
            last_seen = unlogged[-1]["id"]

            redis_server.stop()
            redis_server.start()

            async def accepted_again():
                response = await post(client, web.url, key, "after")
                return response.json() if response.status_code == 202 else None

            after = await wait_for(accepted_again, 30, "publishing to work by itself again")
            cluster.start("worker")
            earlier_ids = {e["id"] for e in logged + unlogged}
            assert after["id"] not in earlier_ids
            resumed = await ws_connect(web.ws_url, key, last_event_id=last_seen)
            welcome = await resumed.welcome()
            fence = await publish(client, web.url, key, "t", "fence")
            got = [e["id"] for e in await resumed.until("fence")]
            await resumed.close()

            if persistent:
                # Nothing was lost: the gap is replayed, then live events follow.
                assert welcome["recovered"] is True
                assert got == [after["id"], fence["id"]]
                expected = [e["id"] for e in logged + unlogged] + got
            else:
                # The two unlogged events are gone, and their seqs were handed out again under
                # new ids: the client is told it cannot resume, and never gets a wrong event.
                assert welcome["recovered"] is False
                assert got == [fence["id"]]
                assert after["seq"] == unlogged[0]["seq"]
                expected = [e["id"] for e in logged] + [after["id"], fence["id"]]

            async def log_is_truthful():
                return await logged_ids(client, web, key) == expected

            await wait_for(log_is_truthful, 30, "the log to hold what survived, once each")
    finally:
        cluster.stop_all()  # before its Redis: without it, they would retry and complain
        redis_server.stop()


# Minute-long outages --------------------------------------------------------------------------

OUTAGE = 60.0  # seconds: longer than every retry's longest wait


async def a_minute_without_postgresql(web, key: str, own_postgres) -> None:
    """A minute without PostgreSQL loses nothing accepted."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        accepted = [(await publish(client, web.url, key, "t", "before"))["id"]]
        subscriber = await ws_connect(web.ws_url, key)
        await subscriber.welcome()

        own_postgres.stop()
        statuses = set()
        ready = set()
        ends = time.monotonic() + OUTAGE
        while time.monotonic() < ends:
            response = await post(client, web.url, key, len(accepted))
            statuses.add(response.status_code)
            if response.status_code == 202:
                accepted.append(response.json()["id"])
            ready.add((await client.get(f"{web.url}/readyz")).status_code)
            await asyncio.sleep(0.5)
        lag = (await stats(client, web.url, key))["persistence"]["lag_seconds"]
        own_postgres.start()

        assert statuses == {202}, "publishing needs no database"
        assert ready == {503}
        assert lag > OUTAGE / 2
        live = await subscriber.events(len(accepted) - 1, within=10)
        assert [e["id"] for e in live] == accepted[1:]

        async def all_logged():
            return await logged_ids(client, web, key) == accepted

        await wait_for(all_logged, 60, "every event of the outage in the log, once, in order")
    await subscriber.close()


async def a_minute_without_redis(web, key: str, own_redis) -> None:
    """A minute without Redis is answered 503 and recovers by itself."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        before = await publish(client, web.url, key, "t", "before")

        own_redis.stop()
        answers = set()
        ends = time.monotonic() + OUTAGE
        while time.monotonic() < ends:
            response = await post(client, web.url, key, "during")
            answers.add((response.status_code, "retry-after" in response.headers))
            history = await client.get(f"{web.url}/api/v1/events", headers=auth(key))
            answers.add((history.status_code, "history"))
            live = await client.get(f"{web.url}/api/v1/stats", headers=auth(key))
            answers.add((live.status_code, "stats"))
            await asyncio.sleep(1.0)
        own_redis.start()
        restarted = time.monotonic()

        # History needs only the database; live numbers need Redis: 503, never 500.
        assert answers == {(503, True), (200, "history"), (503, "stats")}, answers

        async def accepted_again():
            response = await post(client, web.url, key, "after")
            return response.json() if response.status_code == 202 else None

        after = await wait_for(accepted_again, 30, "publishing to work by itself again")
        recovered_in = time.monotonic() - restarted

        async def both_logged():
            return await logged_ids(client, web, key) == [before["id"], after["id"]]

        await wait_for(both_logged, 30, "the worker to log what came after")
        assert recovered_in < 30


# Both outages at once, each on a cluster of its own (they share nothing): a minute each,
# one minute of the run. The two are light (a publish every half second or second).
@pytest.mark.timeout(300)
async def test_a_minute_without_postgresql_or_redis_loses_nothing_and_recovers_by_itself(
    make_cluster, own_postgres, redis_url, own_redis, pg_database
):
    started = []
    for database, redis_server in ((own_postgres.url, redis_url), (pg_database, own_redis.url)):
        cluster = make_cluster(DATABASE_URL=database, REDIS_URL=redis_server)
        web, _ = cluster.start_side_by_side("web", "worker", tenant="acme")
        started.append((web, cluster.key))
    (pg_web, pg_key), (redis_web, redis_key) = started
    await asyncio.gather(
        a_minute_without_postgresql(pg_web, pg_key, own_postgres),
        a_minute_without_redis(redis_web, redis_key, own_redis),
    )
