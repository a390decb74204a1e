"""The Redis engine's connection admission (RedisBackend.connection_acquire) on the machine's
Redis: several engines stand for several processes of one hub."""

import asyncio
import time

import pytest

from eventhub.redis_connection import redis_host
from streams.backends.redis import PROCESS_TTL, PROCESSES, RedisBackend
from streams.redis_keys import tenant_key

pytestmark = pytest.mark.e2e

TENANT = 7
LOCAL = {"websocket": 0, "sse": 0}  # the Redis engine counts in Redis, not from the hub


@pytest.fixture
async def engines(redis_url, settings):
    settings.REDIS = redis_host(url=redis_url)
    made = [RedisBackend(), RedisBackend()]
    yield made
    for engine in made:
        await engine.close()


async def acquire(engine: RedisBackend, limit: int, transport: str = "websocket") -> bool:
    return await engine.connection_acquire(TENANT, transport, limit, LOCAL)


async def live(engine: RedisBackend) -> int:
    return sum((await engine.connections(TENANT, LOCAL)).values())


async def test_connects_at_once_on_two_processes_are_admitted_up_to_the_limit(engines):
    attempts = [acquire(engines[i % 2], 3, ("websocket", "sse")[i % 3 == 0]) for i in range(12)]
    outcomes = await asyncio.gather(*attempts)
    assert outcomes.count(True) == 3
    assert await live(engines[0]) == await live(engines[1]) == 3


async def test_a_refused_connect_counts_nothing_and_a_released_one_frees_its_place(engines):
    first, second = engines
    assert await acquire(first, 1)
    assert not await acquire(second, 1)
    assert not await acquire(first, 1)
    assert await live(second) == 1
    await first.connection_change(TENANT, "websocket", -1)
    assert await acquire(second, 1)
    assert await live(first) == 1


async def test_the_connections_of_a_process_that_stopped_beating_do_not_count(engines):
    gone, alive = engines
    assert await acquire(gone, 1)
    stale = time.time() - PROCESS_TTL - 1
    await alive.redis.zadd(PROCESSES, {gone.process_id: stale})
    assert await acquire(alive, 1)


async def test_a_connect_cancelled_while_redis_answers_leaves_no_count_behind(engines):
    engine = engines[0]
    attempt = asyncio.create_task(acquire(engine, 5))
    await asyncio.sleep(0)  # the connect now waits for the script
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    field = f"{engine.process_id}|websocket"
    await asyncio.wait_for(asyncio.gather(*engine._acquiring), 5)  # the script's own task
    # Counted by the script after all, then given back.
    assert await engine.redis.hget(tenant_key(TENANT, "connections"), field) is None
    assert engine._connections[(TENANT, "websocket")] == 0


# Redis emptied (a restart without persistence, a failover, a FLUSHDB) while connections are
# open: the counts it held are gone, but the processes still know theirs.


async def test_a_process_counts_its_own_connections_after_redis_lost_them(engines):
    engine = engines[0]
    assert await acquire(engine, 1)
    await engine.redis.flushdb()
    assert not await acquire(engine, 1)
    assert not await acquire(engine, 1, "sse")


async def test_connections_closed_after_redis_lost_their_counts_leave_none_negative(engines):
    first, second = engines
    assert await acquire(first, 2)
    assert await acquire(first, 2, "sse")
    await first.redis.flushdb()
    await first.connection_change(TENANT, "websocket", -1)
    await first.connection_change(TENANT, "sse", -1)
    assert await first.redis.hgetall(tenant_key(TENANT, "connections")) == {}
    # Counted from zero, not from -1: the tenant gets its limit, not more.
    outcomes = [await acquire(second, 2) for _ in range(4)]
    assert outcomes == [True, True, False, False]


async def test_a_process_writes_its_counts_again_once_redis_lost_them(engines):
    first, second = engines
    assert await acquire(first, 2)
    await first.redis.flushdb()
    first.start()  # its sync, every second, finds it gone from Redis and writes its counts
    deadline = time.monotonic() + 5
    while await live(second) != 1:
        assert time.monotonic() < deadline, "the lost count was not written again"
        await asyncio.sleep(0.1)
    assert await acquire(second, 2)
    assert not await acquire(second, 2)
