"""The Redis engine tells a hub's catch-up which tenants' sequences moved since its last tick
(RedisBackend.changed_seqs), on the machine's Redis: the quiet ones cost nothing to check."""

import pytest
import redis.asyncio as aioredis
from django.utils import timezone

from streams.backends.redis import RedisBackend
from streams.envelope import data_encode
from streams.redis_keys import SEQ_CLOCK, SEQ_GENERATION
from tests.factories import TenantFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def engine(redis_engine):
    return redis_engine


@pytest.fixture
def tenants(db):
    return [TenantFactory().pk for _ in range(3)]


async def publish(engine: RedisBackend, tenant_id: int, n: int = 1) -> int:
    items = [("t", "message", data_encode(i)) for i in range(n)]
    return (await engine.publish(tenant_id, items, timezone.now()))[-1].seq


async def test_the_first_read_gives_every_sequence(engine, tenants):
    last = await publish(engine, tenants[0], 3)

    _, seqs = await engine.changed_seqs(tenants, None)

    assert seqs == {tenants[0]: last, tenants[1]: 0, tenants[2]: 0}


async def test_later_reads_give_only_the_tenants_that_published_since(engine, tenants):
    await publish(engine, tenants[0])
    clock, _ = await engine.changed_seqs(tenants, None)

    last = await publish(engine, tenants[1], 2)
    clock, seqs = await engine.changed_seqs(tenants, clock)

    assert seqs == {tenants[1]: last}
    _, seqs = await engine.changed_seqs(tenants, clock)
    assert seqs == {}


async def test_only_the_tenants_asked_for_are_read(engine, tenants):
    clock, _ = await engine.changed_seqs(tenants, None)
    await publish(engine, tenants[0])
    last = await publish(engine, tenants[2])

    _, seqs = await engine.changed_seqs(tenants[1:], clock)

    assert seqs == {tenants[2]: last}


async def test_a_clock_that_went_back_reads_every_sequence_again(engine, tenants, redis_url):
    last = await publish(engine, tenants[0])
    cursor, _ = await engine.changed_seqs(tenants, None)
    client = aioredis.from_url(redis_url)
    try:
        await client.set(SEQ_CLOCK, 0)
    finally:
        await client.aclose()

    _, seqs = await engine.changed_seqs(tenants, cursor)

    assert seqs == {tenants[0]: last, tenants[1]: 0, tenants[2]: 0}


async def test_a_redis_that_lost_its_data_reads_every_sequence_again_even_past_the_old_clock(
    engine, tenants, redis_url
):
    # What an emptied Redis looks like once publishes have pushed its new clock past the one
    # a hub read before.
    await publish(engine, tenants[0])
    cursor, _ = await engine.changed_seqs(tenants, None)
    client = aioredis.from_url(redis_url)
    try:
        await client.delete(SEQ_GENERATION)
        await client.incrby(SEQ_CLOCK, 10)
    finally:
        await client.aclose()

    _, seqs = await engine.changed_seqs(tenants, cursor)

    assert set(seqs) == set(tenants)
