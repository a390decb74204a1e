"""Provides where the hub keeps its shared state in Redis: the client, the key names, and the
form of an event in a replay buffer and the log stream. Shared by the Redis engine
(`streams.backends.redis`), which writes them, and the log worker (`streams.log.worker`), which
reads the stream."""

import time
from datetime import UTC, datetime

import redis.asyncio as aioredis
from channels_redis.utils import create_pool
from django.conf import settings
from redis.asyncio.sentinel import SentinelConnectionPool

from streams.envelope import Envelope

LOG_STREAM = "eventhub:log"
# Which tenants' sequences moved, and when: a counter bumped by every publish, and each tenant
# scored with the counter's value at its last publish (one member per tenant that published).
# A hub's catch-up reads only the tenants that moved since its last tick.
SEQ_CLOCK = "eventhub:seq:clock"
SEQ_CHANGES = "eventhub:seq:changes"
# Made by the first reader of a Redis that has none: a Redis that lost its data has another one,
# so its clock is never taken for the one a hub read before (it may have climbed back past it).
SEQ_GENERATION = "eventhub:seq:generation"


def tenant_key(tenant_id: int, what: str) -> str:
    """The key of one of a tenant's structures (`seq`, `buffer`, `stats`, `rate`, ...)."""
    return f"eventhub:t:{tenant_id}:{what}"


def envelope_from_member(tenant_id: int, member: bytes | str) -> Envelope:
    """Rebuilds an Envelope from its replay-buffer (and log-stream) form.

    The data is not parsed: PUBLISH writes `[seq,"seq-epoch",topic,type,ts,data]` with the data
    as it was encoded, and topics and types (TOPIC_RE, TYPE_RE) hold no comma, quote or
    backslash, so the first five fields split off at the first five commas.
    """
    text = member.decode() if isinstance(member, bytes) else member
    seq, event_id, topic, type_, ts, data_json = text[1:-1].split(",", 5)
    return Envelope.build(
        tenant_id=tenant_id,
        seq=int(seq),
        epoch=event_id[1:-1].partition("-")[2],
        topic=topic[1:-1],
        type=type_[1:-1],
        data_json=data_json,
        received_at=datetime.fromtimestamp(float(ts), UTC),
    )


class HubRedis(aioredis.Redis):
    """A client that, when closed, also closes its connections to the Sentinels it found the
    master through (redis-py leaves them to the caller)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if isinstance(self.connection_pool, SentinelConnectionPool):
            await self.connection_pool.sentinel_manager.aclose()


def redis_client(*, timeout: float = 5.0, connect_timeout: float = 2.0) -> aioredis.Redis:
    """A client of the hub's Redis (settings.REDIS: a URL, TLS or not, or a Sentinel service),
    built by channels-redis' own `create_pool` so that it connects as the channel layer does."""
    if settings.REDIS is None:
        raise RuntimeError("no Redis is configured (REDIS_URL or REDIS_SENTINELS)")
    host = dict(
        settings.REDIS,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        health_check_interval=10,
        retry_on_timeout=False,
    )
    return HubRedis.from_pool(create_pool(host))


async def log_backlog(redis) -> tuple[int, float]:
    """(entries of the log stream, age in seconds of the oldest): what no worker has committed
    yet (a batch is deleted from the stream as it commits). An entry's id starts with its time
    in milliseconds. Raises RedisError."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(LOG_STREAM)
        pipe.xrange(LOG_STREAM, count=1)
        length, first = await pipe.execute()
    if not first:
        return int(length), 0.0
    millis = int(first[0][0].split(b"-")[0])
    return int(length), max(0.0, time.time() - millis / 1000)
