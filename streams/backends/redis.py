"""Provides the Redis engine: sequences, replay buffers, the log hand-off (a Redis Stream) and
counters shared by every process, so that many processes act as one hub.

Over 300 lines: most of it is the Lua scripts, each one atomic step of the engine contract,
kept beside the method that calls it."""

import asyncio
import json
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import cast

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError, ResponseError

from streams import metrics
from streams.backends import HubUnavailable, LogBacklogFull, RateLimited
from streams.backends.announcer import Announcer
from streams.envelope import Envelope, epoch_new
from streams.log.reads import event_log_last_seq
from streams.redis_keys import (
    LOG_STREAM,
    SEQ_CHANGES,
    SEQ_CLOCK,
    SEQ_GENERATION,
    envelope_from_member,
    log_backlog,
    redis_client,
    tenant_key,
)
from streams.tasks import background_task
from webhooks.notices import WebhookNotice
from webhooks.selectors import KindsWanted

logger = logging.getLogger(__name__)

PROCESSES = "eventhub:processes"
PROCESS_TTL = 15.0
TRANSPORTS = ("websocket", "sse")


# Sequencing, buffering and the hand-off to the log in one atomic step: an event has a seq if
# and only if it is in the replay buffer and in the log stream, and seqs are handed out in
# the order the events enter both.
PUBLISH = """
local last = redis.call('HGET', KEYS[1], 'last')
if not last then return redis.error_reply('NOSEED') end
local n = tonumber(ARGV[4])
local rate = tonumber(ARGV[5])
-- The stream holds what no worker has committed: bounded, whatever the database does.
if redis.call('XLEN', KEYS[3]) + n > tonumber(ARGV[6]) then return {-2, '0'} end
if rate > 0 then
  -- Token bucket of `rate` events/s with a burst of `rate`, shared by every process.
  local now = redis.call('TIME')
  now = tonumber(now[1]) + tonumber(now[2]) / 1000000
  local bucket = redis.call('HMGET', KEYS[5], 'tokens', 'stamp')
  local tokens = tonumber(bucket[1]) or rate
  local stamp = tonumber(bucket[2]) or now
  tokens = math.min(rate, tokens + math.max(0, now - stamp) * rate)
  if n > rate then return {-1, tostring(n / rate)} end
  if tokens < n then
    redis.call('HSET', KEYS[5], 'tokens', tostring(tokens), 'stamp', tostring(now))
    redis.call('EXPIRE', KEYS[5], 3600)
    return {-1, tostring((n - tokens) / rate)}
  end
  redis.call('HSET', KEYS[5], 'tokens', tostring(tokens - n), 'stamp', tostring(now))
  redis.call('EXPIRE', KEYS[5], 3600)
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local first = redis.call('HINCRBY', KEYS[1], 'last', n) - n + 1
for i = 0, n - 1 do
  local seq = string.format('%d', first + i)
  local b = 7 + i * 3
  local member = '[' .. seq .. ',"' .. seq .. '-' .. epoch .. '",' .. ARGV[b] .. ',' ..
    ARGV[b + 1] .. ',' .. ARGV[3] .. ',' .. ARGV[b + 2] .. ']'
  redis.call('ZADD', KEYS[2], seq, member)
  redis.call('XADD', KEYS[3], '*', 't', ARGV[1], 'e', member)
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[2]) + 1))
redis.call('HINCRBY', KEYS[4], 'accepted', n)
redis.call('ZADD', KEYS[7], redis.call('INCR', KEYS[6]), ARGV[1])
return {first, epoch}
"""

# The tenants whose sequence moved after the clock read `ARGV[1]` in the generation `ARGV[2]`
# (see SEQ_CHANGES, SEQ_GENERATION; `ARGV[3]`: the generation to make when there is none):
# {generation, clock now, their ids}, or {generation, clock now, false} when every sequence
# must be read (no earlier read, -1; another generation; a clock that went back).
SEQ_CHANGED = """
local generation = redis.call('GET', KEYS[3])
if not generation then
  generation = ARGV[3]
  redis.call('SET', KEYS[3], generation)
end
local clock = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
if since < 0 or generation ~= ARGV[2] or clock < since then return {generation, clock, false} end
return {generation, clock, redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')}
"""

# The tokens the shared bucket holds now (the PUBLISH script's arithmetic), taking none.
RATE_PEEK = """
local rate = tonumber(ARGV[1])
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(bucket[1]) or rate
local stamp = tonumber(bucket[2]) or now
return tostring(math.min(rate, tokens + math.max(0, now - stamp) * rate))
"""

SEED = """
if redis.call('HEXISTS', KEYS[1], 'last') == 0 then
  redis.call('HSET', KEYS[1], 'last', ARGV[1], 'epoch', ARGV[2])
end
return redis.call('HGET', KEYS[1], 'last')
"""

# Admission under `--max-connections` in one step, so that processes admitting at the same
# moment cannot overshoot: the tenant's counts on the other live processes are summed with this
# process's own (ARGV[6], from the process: its field in Redis may have been lost), and this
# process's field is set to its count with the new connection (ARGV[7]) only while the total is
# below the limit. Returns {admitted (1/0), whether this process was missing from PROCESSES}.
CONNECTION_ACQUIRE = """
local limit = tonumber(ARGV[3])
local since = tonumber(ARGV[4])
local fields = redis.call('HGETALL', KEYS[1])
local live = {}
local total = tonumber(ARGV[6])
for i = 1, #fields, 2 do
  local count = tonumber(fields[i + 1]) or 0
  local process = string.match(fields[i], '^(.*)|') or ''
  if count > 0 and process ~= ARGV[1] then
    if live[process] == nil then
      local seen = redis.call('ZSCORE', KEYS[2], process)
      live[process] = (seen and tonumber(seen) >= since) or false
    end
    if live[process] then total = total + count end
  end
end
local missing = redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
if total >= limit then return {0, missing} end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[7])
return {1, missing}
"""


# Bytes of an event's JSON for subscribers beyond its buffer member: the frame names its fields
# and writes the time out in ISO 8601.
MEMBER_TO_FRAME_BYTES = 66
# Members one BUFFER_SIZE call reads: Redis serves every tenant, so no call holds it for long.
BUFFER_SIZE_CHUNK = 64

# How much of the buffer a replay would send, read without sending it to the process:
# {members read, how many the patterns (ARGV[4] on) match, their bytes, first seq, last seq}.
BUFFER_SIZE = """
local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
local matched, size = 0, 0
for _, member in ipairs(members) do
  local topic = string.match(member, '^%[%d+,"[^"]*","([^"]*)"') or ''
  for i = 4, #ARGV do
    local p = ARGV[i]
    if p == '*' or p == topic or (string.sub(p, -1) == '*'
        and string.sub(topic, 1, #p - 1) == string.sub(p, 1, -2)) then
      matched = matched + 1
      size = size + #member
      break
    end
  end
end
local first, last = 0, 0
if #members > 0 then
  first = tonumber(string.match(members[1], '^%[(%d+),'))
  last = tonumber(string.match(members[#members], '^%[(%d+),'))
end
return {#members, matched, size, first, last}
"""

# One page of a replay from the buffer: at most ARGV[3] members, as many as fit in ARGV[4]
# bytes (at least one), read 16 at a time so that large members are not all copied for nothing.
BUFFER_PAGE = """
local most, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local page, size = {}, 0
while #page < most do
  local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2],
    'LIMIT', #page, math.min(16, most - #page))
  if #members == 0 then break end
  for _, member in ipairs(members) do
    size = size + #member
    if #page > 0 and size > budget then return page end
    page[#page + 1] = member
  end
end
return page
"""


class RedisBackend:
    """Lives on the serving event loop; every coroutine may raise HubUnavailable."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.layer = get_channel_layer()
        self.announcer = Announcer(self.layer)
        self.redis = redis_client()
        self._publish = self.redis.register_script(PUBLISH)
        self._seed_script = self.redis.register_script(SEED)
        self._buffer_size = self.redis.register_script(BUFFER_SIZE)
        self._buffer_page = self.redis.register_script(BUFFER_PAGE)
        self._connection_acquire = self.redis.register_script(CONNECTION_ACQUIRE)
        self._rate_peek = self.redis.register_script(RATE_PEEK)
        self._seq_changed = self.redis.register_script(SEQ_CHANGED)
        self._db_last_seq = database_sync_to_async(lambda t: event_log_last_seq(tenant_id=t))
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{epoch_new()}"
        self._delivered: defaultdict[int, int] = defaultdict(int)
        # This process's connections per (tenant, transport): the truth its fields in Redis
        # are set to (never incremented there, so a Redis that lost them is repaired by the
        # next write instead of going negative). Written under `_counting`, one write at a
        # time, so that Redis applies them in order; `_unwritten` are the keys changed since.
        self._connections: defaultdict[tuple[int, str], int] = defaultdict(int)
        self._unwritten: set[tuple[int, str]] = set()
        self._counting = asyncio.Lock()
        self._rewrite_all = False
        self._acquiring: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._kinds_wanted = KindsWanted()

    def start(self) -> None:
        if self._task is None:
            self._task = background_task(self._housekeeping(), name="eventhub-redis-sync")

    async def _seed(self, tenant_id: int) -> None:
        # After Redis lost the sequence (first use, or an emptied Redis), continue after the
        # log with a new epoch, so that no id is ever handed out twice.
        last = await self._db_last_seq(tenant_id)
        await self._seed_script(keys=[tenant_key(tenant_id, "seq")], args=[last, epoch_new()])

    async def publish(
        self,
        tenant_id: int,
        items: Sequence[tuple[str, str, str]],
        received_at: datetime,
        rate: int | None = None,
    ) -> list[Envelope]:
        args = [tenant_id, settings.EVENTHUB_REPLAY_WINDOW, repr(received_at.timestamp())]
        args += [len(items), rate or 0, settings.EVENTHUB_LOG_BACKLOG_MAX]
        for topic, type_, data_json in items:
            args += [json.dumps(topic), json.dumps(type_), data_json]
        keys = [tenant_key(tenant_id, "seq"), tenant_key(tenant_id, "buffer"), LOG_STREAM]
        keys += [tenant_key(tenant_id, "stats"), tenant_key(tenant_id, "rate")]
        keys += [SEQ_CLOCK, SEQ_CHANGES]
        try:
            try:
                first, epoch = await self._publish(keys=keys, args=args)
            except ResponseError as exc:
                if "NOSEED" not in str(exc):
                    raise
                await self._seed(tenant_id)
                first, epoch = await self._publish(keys=keys, args=args)
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc
        if first == -1:
            raise RateLimited(float(epoch))
        if first == -2:
            raise LogBacklogFull("the event log's backlog is full")
        epoch = epoch.decode() if isinstance(epoch, bytes) else epoch
        envelopes = [
            Envelope.build(
                tenant_id=tenant_id,
                seq=first + i,
                epoch=epoch,
                topic=topic,
                type=type_,
                data_json=data_json,
                received_at=received_at,
            )
            for i, (topic, type_, data_json) in enumerate(items)
        ]
        await self.announcer.announce(tenant_id, envelopes)
        metrics.count_accepted(tenant_id, len(envelopes))
        return envelopes

    async def webhook_notice(self, notice: WebhookNotice) -> None:
        """Adds a presence or occupancy notice to the log stream, where a persistence worker
        turns it into webhook deliveries; called by the process whose tracker made the change."""
        if not await self._kinds_wanted.wants(notice.tenant_id, notice.kind):
            return
        try:
            await self.redis.xadd(LOG_STREAM, {"w": notice.to_json()})
        except RedisError:
            logger.warning("presence webhook notice of tenant %s lost", notice.tenant_id)

    async def rate_wait(self, *, tenant_id: int, rate: int) -> float:
        """Seconds until the tenant's shared rate bucket holds an event (0: now); takes
        nothing."""
        try:
            tokens = float(await self._rate_peek(keys=[tenant_key(tenant_id, "rate")], args=[rate]))
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc
        return 0.0 if tokens >= 1 else (1 - tokens) / rate

    async def buffered(
        self, tenant_id: int, from_seq: int, to_seq: int | None = None
    ) -> list[Envelope]:
        try:
            # redis-py types every reply as the union of all its commands' replies.
            members = cast(
                list[bytes],
                await self.redis.zrangebyscore(
                    tenant_key(tenant_id, "buffer"), from_seq, "+inf" if to_seq is None else to_seq
                ),
            )
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc
        return [envelope_from_member(tenant_id, m) for m in members]

    async def buffered_size(
        self, tenant_id: int, from_seq: int, to_seq: int, patterns: Sequence[str]
    ) -> tuple[int, int, int]:
        """(first seq held with from_seq <= seq <= to_seq, or 0; how many are held; the bytes of
        event JSON of those `patterns` match): what a replay from the buffer would send, read
        in Redis a chunk at a time."""
        first = held = size = 0
        low = from_seq
        try:
            while low <= to_seq:
                read, matched, member_bytes, first_read, last_read = await self._buffer_size(
                    keys=[tenant_key(tenant_id, "buffer")],
                    args=[low, to_seq, BUFFER_SIZE_CHUNK, *patterns],
                )
                first = first or first_read
                held += read
                size += member_bytes + matched * MEMBER_TO_FRAME_BYTES
                if read < BUFFER_SIZE_CHUNK:
                    break
                low = last_read + 1
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc
        return first, held, size

    async def buffered_page(
        self, tenant_id: int, from_seq: int, to_seq: int, max_events: int, max_bytes: int
    ) -> list[Envelope]:
        """The buffer's events from `from_seq` on (up to `to_seq`), oldest first, as many as
        `max_events` and `max_bytes` allow (at least one): a page of a replay."""
        try:
            members = await self._buffer_page(
                keys=[tenant_key(tenant_id, "buffer")],
                args=[from_seq, to_seq, max_events, max_bytes],
            )
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc
        return [envelope_from_member(tenant_id, m) for m in members]

    async def current_seq(self, tenant_id: int) -> int:
        try:
            last = await self.redis.hget(tenant_key(tenant_id, "seq"), "last")
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc
        return int(last) if last is not None else 0

    async def changed_seqs(
        self, tenant_ids: Collection[int], since: object
    ) -> tuple[object, dict[int, int]]:
        generation, clock = since if isinstance(since, tuple) else ("", -1)
        try:
            generation, clock, changed = await self._seq_changed(
                keys=[SEQ_CLOCK, SEQ_CHANGES, SEQ_GENERATION],
                args=[clock, generation, epoch_new()],
            )
            if changed is None:  # Lua's false: every sequence
                wanted = list(tenant_ids)
            else:
                moved = {int(t) for t in changed}
                wanted = [t for t in tenant_ids if t in moved]
            seqs: dict[int, int] = {}
            if wanted:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for tenant_id in wanted:
                        pipe.hget(tenant_key(tenant_id, "seq"), "last")
                    lasts = await pipe.execute()
                seqs = {t: int(last or 0) for t, last in zip(wanted, lasts, strict=True)}
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc
        if isinstance(generation, bytes):
            generation = generation.decode()
        return (generation, int(clock)), seqs

    async def current_epoch(self, tenant_id: int) -> str | None:
        try:
            epoch = await self.redis.hget(tenant_key(tenant_id, "seq"), "epoch")
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc
        return epoch.decode() if isinstance(epoch, bytes) else epoch

    # Idempotency ------------------------------------------------------------------------------

    async def idempotency_claim(
        self, tenant_id: int, slot: str, fingerprint: str, ttl: float
    ) -> tuple[str, str | None] | None:
        """Claims a key for this request (None), or returns (fingerprint, response) of the
        request that holds it, on any process (response None while that one is running)."""
        key = tenant_key(tenant_id, f"idempotency:{slot}")
        try:
            if await self.redis.set(key, json.dumps([fingerprint, None]), nx=True, ex=int(ttl)):
                return None
            stored = await self.redis.get(key)
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc
        if stored is None:  # expired in between: claim again
            return await self.idempotency_claim(tenant_id, slot, fingerprint, ttl)
        fingerprint_stored, response = json.loads(stored)
        return fingerprint_stored, response

    async def idempotency_save(
        self, tenant_id: int, slot: str, fingerprint: str, response: str, ttl: float
    ) -> None:
        key = tenant_key(tenant_id, f"idempotency:{slot}")
        await self.redis.set(key, json.dumps([fingerprint, response]), ex=int(ttl))

    async def idempotency_release(self, tenant_id: int, slot: str) -> None:
        await self.redis.delete(tenant_key(tenant_id, f"idempotency:{slot}"))

    # Cross-process counters -----------------------------------------------------------------

    def count_delivered(self, tenant_id: int, n: int) -> None:
        metrics.EVENTS_DELIVERED.inc(n)
        self._delivered[tenant_id] += n

    async def connection_acquire(
        self, tenant_id: int, transport: str, limit: int, local: dict[str, int]
    ) -> bool:
        """Counts one more connection of the tenant on this process if its live connections
        on every process are fewer than `limit`; returns whether it did. Called by the hub
        before it admits a connection of a limited tenant; `connection_change(-1)` undoes it.

        A connect cancelled while the script runs leaves no count behind: the script's answer
        is awaited in a task of its own, which gives the count back when nobody is waiting.
        """
        abandoned = False
        key = (tenant_id, transport)

        async def acquire() -> bool:
            async with self._counting:
                now = time.time()
                mine = sum(self._connections.get((tenant_id, t), 0) for t in TRANSPORTS)
                try:
                    admitted, missing = await self._connection_acquire(
                        keys=[tenant_key(tenant_id, "connections"), PROCESSES],
                        args=[
                            self.process_id,
                            f"{self.process_id}|{transport}",
                            limit,
                            now - PROCESS_TTL,
                            now,
                            mine,
                            self._connections.get(key, 0) + 1,
                        ],
                    )
                except BaseException:
                    self._unwritten.add(key)  # the script may have run: write the truth again
                    raise
                if missing:  # Redis lost this process (emptied, restarted): write all again
                    self._rewrite_all = True
                if not admitted:
                    return False
                self._connections[key] += 1
            if abandoned:
                await self.connection_change(tenant_id, transport, -1)
            return True

        task = self.loop.create_task(acquire())
        self._acquiring.add(task)
        task.add_done_callback(self._acquiring.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            abandoned = True
            if task.done() and not task.cancelled() and task.exception() is None and task.result():
                # Admitted just as this connect was cancelled, too late for acquire() to see it.
                give_back = self.loop.create_task(self.connection_change(tenant_id, transport, -1))
                self._acquiring.add(give_back)
                give_back.add_done_callback(self._acquiring.discard)
            raise
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc

    async def connection_change(self, tenant_id: int, transport: str, delta: int) -> None:
        key = (tenant_id, transport)
        self._connections[key] += delta
        self._unwritten.add(key)
        await self._write_connections()

    async def _write_connections(self) -> None:
        """Sets this process's fields in Redis to its counts, for the keys changed since the
        last write (all of them after Redis lost this process). Changes made while another
        write was in flight are written together by the next one."""
        async with self._counting:
            if self._rewrite_all:
                self._unwritten.update(self._connections)
            if not self._unwritten:
                return
            keys, self._unwritten, self._rewrite_all = self._unwritten, set(), False
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for tenant_id, transport in keys:
                        hash_key = tenant_key(tenant_id, "connections")
                        field = f"{self.process_id}|{transport}"
                        count = self._connections.get((tenant_id, transport), 0)
                        if count > 0:
                            pipe.hset(hash_key, field, count)
                        else:
                            pipe.hdel(hash_key, field)
                    pipe.zadd(PROCESSES, {self.process_id: time.time()})
                    *_, missing = await pipe.execute()
            except BaseException as exc:
                self._unwritten |= keys  # written by the next write, or the next sync
                if not isinstance(exc, RedisError):
                    raise
                logger.warning("could not record a connection change; the next sync repairs it")
                return
            if missing:
                self._rewrite_all = True
            for key in keys:  # nothing kept for a tenant's transport without connections
                if self._connections.get(key, 1) <= 0 and key not in self._unwritten:
                    del self._connections[key]

    async def connections(self, tenant_id: int, local: dict[str, int]) -> dict[str, int]:
        """Live connections of the tenant on every process that is still alive."""
        fields = cast(
            dict[bytes, bytes], await self.redis.hgetall(tenant_key(tenant_id, "connections"))
        )
        processes = await self.redis.zrangebyscore(PROCESSES, time.time() - PROCESS_TTL, "+inf")
        alive = {p.decode() for p in cast(list[bytes], processes)}
        alive.discard(self.process_id)
        # This process's own from its counts: its fields may be on their way to Redis.
        totals = {t: max(0, self._connections.get((tenant_id, t), 0)) for t in TRANSPORTS}
        for field, value in fields.items():
            process, _, transport = field.decode().rpartition("|")
            if process in alive and transport in totals:
                totals[transport] += max(0, int(value))
        return totals

    async def log_backlog(self) -> tuple[int, float]:
        try:
            return await log_backlog(self.redis)
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc

    async def stats(self, tenant_id: int) -> dict:
        try:
            counters = cast(
                dict[bytes, bytes], await self.redis.hgetall(tenant_key(tenant_id, "stats"))
            )
            oldest = cast(
                list[tuple[bytes, dict]], await self.redis.xrange(LOG_STREAM, "-", "+", count=1)
            )
        except RedisError as exc:
            raise HubUnavailable(str(exc)) from exc
        accepted = int(counters.get(b"accepted", 0))
        persisted = int(counters.get(b"persisted", 0))
        delivered = int(counters.get(b"delivered", 0)) + self._delivered.get(tenant_id, 0)
        pending = max(0, accepted - persisted)
        lag = 0.0
        if oldest and pending:
            millis = int(oldest[0][0].split(b"-")[0])
            lag = max(0.0, time.time() - millis / 1000)
        return {
            "events": {"accepted": accepted, "delivered": delivered, "persisted": persisted},
            "persistence": {"pending": pending, "lag_seconds": round(lag, 3)},
        }

    async def _housekeeping(self) -> None:
        """Every second: flushes delivery counts and refreshes this process's liveness."""
        while True:
            await asyncio.sleep(1.0)
            try:
                delivered, self._delivered = self._delivered, defaultdict(int)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for tenant_id, n in delivered.items():
                        pipe.hincrby(tenant_key(tenant_id, "stats"), "delivered", n)
                    pipe.zadd(PROCESSES, {self.process_id: time.time()})
                    pipe.zremrangebyscore(PROCESSES, "-inf", time.time() - 24 * 3600)
                    *_, missing, _ = await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception:
                for tenant_id, n in delivered.items():
                    self._delivered[tenant_id] += n
                logger.warning("redis housekeeping failed; retrying")
                continue
            # Redis lost this process (emptied, restarted), or a count could not be written:
            # its connections count again once their fields are back.
            if missing:
                self._rewrite_all = True
            if self._rewrite_all or self._unwritten:
                await self._write_connections()

    async def close(self) -> None:
        self.announcer.close()
        if self._task is not None:
            self._task.cancel()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for (tenant_id, transport), n in self._connections.items():
                    if n:
                        pipe.hdel(
                            tenant_key(tenant_id, "connections"), f"{self.process_id}|{transport}"
                        )
                pipe.zrem(PROCESSES, self.process_id)
                await pipe.execute()
        except Exception:
            logger.warning("could not unregister this process from redis")
        await self.redis.aclose()
