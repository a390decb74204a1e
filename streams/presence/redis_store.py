"""Provides the presence state in Redis, shared by every process of the hub.

Keys (the tenant's part under `streams.redis_keys.tenant_key`):
- `eventhub:t:{tenant}:presence:{topic}`, a hash per exact topic: `e|{process}|{user}` ->
  `[connections, info]` (user "" anonymous, "\\x00" beyond a cap), `u|{user}` -> how many
  processes hold the user, `#listed` (users listed) and `#entries`. Deleted with its last entry.
- `eventhub:t:{tenant}:presence-users`: users listed over all the tenant's topics (the cap).
- `eventhub:t:{tenant}:presence-topics`: a set of the tenant's topics with an entry (the
  dashboard's counts); a topic leaves it with its hash.
- `eventhub:presence:leases`, a sorted set: process -> when its lease ends (renewed on each
  heartbeat tick, two heartbeat intervals long); `eventhub:presence:held:{process}`: the topic
  hashes it has entries in, which whoever finds its lease ended empties of them.
Each key also has a TTL (an hour, renewed while in use) against a hub that stopped entirely."""

import json
import time
from typing import cast

from django.conf import settings

from streams.presence.changes import LEAVE, UNLISTED, VACATED, Change
from streams.presence.store import Drop, Info, Put, listed_user, snapshot_from, topics_from
from streams.redis_keys import tenant_key

LEASES = "eventhub:presence:leases"
KEY_TTL = 3600
LEASE_INTERVALS = 2.0  # a lease lasts this many heartbeat intervals

PUT = """
local field = 'e|' .. ARGV[1] .. '|' .. ARGV[2]
if redis.call('HEXISTS', KEYS[1], field) == 1 then
  redis.call('HSET', KEYS[1], field, ARGV[3])
  return {1, 0, 0, 0}
end
local holder = 'u|' .. ARGV[2]
local new_user = redis.call('HEXISTS', KEYS[1], holder) == 0
local listed = new_user and ARGV[4] == '1'
if listed then
  if tonumber(redis.call('HGET', KEYS[1], '#listed') or '0') >= tonumber(ARGV[5])
     or tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[6]) then
    return {0, 0, 0, 0}
  end
  redis.call('HINCRBY', KEYS[1], '#listed', 1)
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
end
local occupied = redis.call('HINCRBY', KEYS[1], '#entries', 1) == 1
redis.call('HSET', KEYS[1], field, ARGV[3])
redis.call('HINCRBY', KEYS[1], holder, 1)
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('SADD', KEYS[3], KEYS[1])
redis.call('EXPIRE', KEYS[3], ARGV[7])
-- A process killed before its first heartbeat must still be taken out.
redis.call('ZADD', KEYS[4], 'NX', ARGV[8], ARGV[1])
if occupied then redis.call('SADD', KEYS[5], ARGV[9]) end
redis.call('EXPIRE', KEYS[5], ARGV[7])
return {1, new_user and 1 or 0, occupied and 1 or 0, 1}
"""

# Takes out entries of one process: one user's (ARGV[2]), or with ARGV[4] = '1' all of them
# (a dead process's). Returns {vacated, users who left}.
DROP = """
local prefix = 'e|' .. ARGV[1] .. '|'
local fields
if ARGV[4] == '1' then fields = redis.call('HKEYS', KEYS[1]) else fields = {prefix .. ARGV[2]} end
local left = {}
local removed = 0
for _, field in ipairs(fields) do
  if string.sub(field, 1, #prefix) == prefix and redis.call('HDEL', KEYS[1], field) == 1 then
    local user = string.sub(field, #prefix + 1)
    removed = removed + 1
    if redis.call('HINCRBY', KEYS[1], 'u|' .. user, -1) <= 0 then
      redis.call('HDEL', KEYS[1], 'u|' .. user)
      table.insert(left, user)
      if user ~= '' and user ~= ARGV[3] then
        redis.call('HINCRBY', KEYS[1], '#listed', -1)
        if redis.call('DECR', KEYS[2]) <= 0 then redis.call('DEL', KEYS[2]) end
      end
    end
  end
end
local vacated = 0
if removed > 0 and redis.call('HINCRBY', KEYS[1], '#entries', -removed) <= 0 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[3], ARGV[5])
  vacated = 1
end
return {vacated, left}
"""


def topic_key(tenant_id: int, topic: str) -> str:
    return tenant_key(tenant_id, f"presence:{topic}")


def _tenant_users_key(tenant_id: int) -> str:
    return tenant_key(tenant_id, "presence-users")


def _tenant_topics_key(tenant_id: int) -> str:
    return tenant_key(tenant_id, "presence-topics")


def _held_key(process: str) -> str:
    return f"eventhub:presence:held:{process}"


def _parse_topic_key(key: str) -> tuple[int, str]:
    tenant, _, rest = key.removeprefix("eventhub:t:").partition(":")
    return int(tenant), rest.removeprefix("presence:")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(fields: dict) -> dict[tuple[str, str], tuple[int, Info]]:
    """The entries of a topic hash, (process, user) -> (connections, info)."""
    entries = {}
    for field, value in fields.items():
        name = _text(field)
        if not name.startswith("e|"):
            continue
        process, _, user = name[2:].partition("|")
        connections, info = json.loads(value)
        entries[(process, user)] = (int(connections), info)
    return entries


class RedisStore:
    """The presence state of every process, in the hub's Redis (`redis`: the engine's
    client). Each write is one script, so that processes counting the same user at once
    agree on who joined first and who left last."""

    def __init__(self, redis) -> None:
        self.redis = redis
        self._put = redis.register_script(PUT)
        self._drop = redis.register_script(DROP)
        self._held: dict[str, int] = {}  # topic key -> this process's entries in it
        self._next_refresh = 0.0

    async def put(
        self, *, tenant_id: int, topic: str, process: str, user: str, connections: int, info: Info
    ) -> Put:
        key = topic_key(tenant_id, topic)
        listed, joined, occupied, created = await self._put(
            keys=[
                key,
                _tenant_users_key(tenant_id),
                _held_key(process),
                LEASES,
                _tenant_topics_key(tenant_id),
            ],
            args=[
                process,
                user,
                json.dumps([connections, info], separators=(",", ":")),
                "1" if listed_user(user) else "0",
                settings.EVENTHUB_PRESENCE_MAX_PER_TOPIC,
                settings.EVENTHUB_PRESENCE_MAX_PER_TENANT,
                KEY_TTL,
                time.time() + LEASE_INTERVALS * settings.EVENTHUB_HEARTBEAT_INTERVAL,
                topic,
            ],
        )
        if created:
            self._held[key] = self._held.get(key, 0) + 1
        return Put(listed=bool(listed), joined=bool(joined), occupied=bool(occupied))

    async def drop(self, *, tenant_id: int, topic: str, process: str, user: str) -> Drop:
        key = topic_key(tenant_id, topic)
        vacated, left = await self._drop(
            keys=[key, _tenant_users_key(tenant_id), _tenant_topics_key(tenant_id)],
            args=[process, user, UNLISTED, "0", topic],
        )
        held = self._held.get(key, 0) - 1
        if held <= 0:
            self._held.pop(key, None)
            await self.redis.srem(_held_key(process), key)
        else:
            self._held[key] = held
        return Drop(left=bool(left), vacated=bool(vacated))

    async def snapshot(self, *, tenant_id: int, topic: str) -> dict:
        fields = cast(dict, await self.redis.hgetall(topic_key(tenant_id, topic)))
        return snapshot_from(_entries(fields))

    async def present_topics(self, *, tenant_id: int, limit: int) -> dict:
        # Reads at most `limit` topics (the busiest first among those), in one pipeline.
        key = _tenant_topics_key(tenant_id)
        seen: dict[str, None] = {}  # SSCAN may return a member twice
        cursor = 0
        while True:
            cursor, batch = await self.redis.sscan(key, cursor, count=limit)
            seen.update(dict.fromkeys(_text(member) for member in batch))
            if not cursor or len(seen) >= limit:
                break
        names = list(seen)[:limit]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(topic_key(tenant_id, name))
            pipe.scard(key)
            *hashes, total = await pipe.execute()
        snapshots = {
            name: snapshot_from(_entries(fields))
            for name, fields in zip(names, hashes, strict=True)
            if fields
        }
        return topics_from(snapshots, limit=limit, more=int(total) > len(names))

    async def heartbeat(self, *, process: str) -> list[Change]:
        now = time.time()
        lease = LEASE_INTERVALS * settings.EVENTHUB_HEARTBEAT_INTERVAL
        await self.redis.zadd(LEASES, {process: now + lease})
        if now >= self._next_refresh and self._held:
            self._next_refresh = now + KEY_TTL / 3
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.expire(_held_key(process), KEY_TTL)
                tenants = set()
                for key in self._held:
                    pipe.expire(key, KEY_TTL)
                    tenants.add(_parse_topic_key(key)[0])
                for tenant_id in tenants:
                    pipe.expire(_tenant_topics_key(tenant_id), KEY_TTL)
                    pipe.expire(_tenant_users_key(tenant_id), KEY_TTL)
                await pipe.execute()
        changes: list[Change] = []
        for dead in await self.redis.zrangebyscore(LEASES, "-inf", now, start=0, num=10):
            name = _text(dead)
            if name == process or not await self.redis.zrem(LEASES, name):
                continue  # another process takes it out
            changes.extend(await self._take_out(name))
        return changes

    async def _take_out(self, process: str) -> list[Change]:
        """Removes every entry of a process whose lease ended; the changes that makes."""
        changes: list[Change] = []
        for raw in await self.redis.smembers(_held_key(process)):
            key = _text(raw)
            tenant_id, topic = _parse_topic_key(key)
            vacated, left = await self._drop(
                keys=[key, _tenant_users_key(tenant_id), _tenant_topics_key(tenant_id)],
                args=[process, "", UNLISTED, "1", topic],
            )
            for user in left:
                if listed_user(_text(user)):
                    changes.append(Change(LEAVE, tenant_id, topic, _text(user)))
            if vacated:
                changes.append(Change(VACATED, tenant_id, topic))
        await self.redis.delete(_held_key(process))
        return changes

    async def release(self, *, process: str, after: float) -> None:
        await self.redis.zadd(LEASES, {process: time.time() + after})
