"""Provides the presence state every process shares: per tenant and exact topic, one entry per
process and user (a user's connections on that process, and its `info`), and per user the number
of processes that hold it. `PresenceStore` is its contract; `LocalStore` keeps it in this process
(the embedded hub), `streams.presence.redis_store.RedisStore` in Redis.

A store only counts; when a user joins or leaves, and the grace between, is the tracker's
(`streams.presence.tracker`)."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

from streams.presence.changes import ANONYMOUS, UNLISTED, Change

Info = dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Put:
    listed: bool  # False: beyond a cap, nothing written (count it as UNLISTED instead)
    joined: bool  # the user's first entry on any process
    occupied: bool  # the topic's first entry


@dataclass(frozen=True, slots=True)
class Drop:
    left: bool  # the user's last entry on any process is gone
    vacated: bool  # the topic's last entry is gone


class PresenceStore(Protocol):
    """What the tracker and the API use of the shared presence state."""

    async def put(
        self, *, tenant_id: int, topic: str, process: str, user: str, connections: int, info: Info
    ) -> Put:
        """Writes a process's entry of a user (ANONYMOUS, UNLISTED: no user) with its count of
        connections; a new user's entry only within the caps."""
        ...

    async def drop(self, *, tenant_id: int, topic: str, process: str, user: str) -> Drop:
        """Removes a process's entry of a user."""
        ...

    async def snapshot(self, *, tenant_id: int, topic: str) -> dict:
        """`{"connections": N, "users": [{"user", "info", "connections"}], "truncated"}`."""
        ...

    async def present_topics(self, *, tenant_id: int, limit: int) -> dict:
        """The tenant's topics with someone present, at most `limit` of them, busiest first:
        `{"topics": [{"topic", "connections", "users"}], "truncated"}` (`truncated`: more
        topics than `limit`)."""
        ...

    async def heartbeat(self, *, process: str) -> list[Change]:
        """Called on each heartbeat of the process: renews its lease, and takes out the entries
        of processes whose lease ran out; returns the changes that makes."""
        ...

    async def release(self, *, process: str, after: float) -> None:
        """Called when the process shuts down: its lease ends `after` seconds from now."""
        ...


def listed_user(user: str) -> bool:
    return user not in (ANONYMOUS, UNLISTED)


def snapshot_from(entries: dict[tuple[str, str], tuple[int, Info]]) -> dict:
    """The snapshot of a topic from its entries, (process, user) -> (connections, info)."""
    users: dict[str, dict] = {}
    total = 0
    truncated = False
    for (_process, user), (n, info) in entries.items():
        total += n
        if user == UNLISTED:
            truncated = True
        if not listed_user(user):
            continue
        listed = users.setdefault(user, {"user": user, "info": info or {}, "connections": 0})
        listed["connections"] += n
    return {"connections": total, "users": list(users.values()), "truncated": truncated}


def topics_from(snapshots: dict[str, dict], *, limit: int, more: bool) -> dict:
    """`PresenceStore.present_topics` from snapshots of topics (`snapshot_from`), by topic."""
    rows = [
        {"topic": topic, "connections": s["connections"], "users": len(s["users"])}
        for topic, s in snapshots.items()
    ]
    rows.sort(key=lambda row: (-row["connections"], row["topic"]))
    return {"topics": rows[:limit], "truncated": more or len(rows) > limit}


@dataclass
class _Topic:
    entries: dict[tuple[str, str], tuple[int, Info]] = field(default_factory=dict)
    holders: dict[str, int] = field(default_factory=dict)  # user -> processes holding it

    @property
    def listed(self) -> int:
        return sum(1 for user in self.holders if listed_user(user))


class LocalStore:
    """The presence state in this process: the embedded hub's, and the model the Redis store
    follows. A process's lease never runs out here (it is the only one)."""

    def __init__(self) -> None:
        self.topics: dict[tuple[int, str], _Topic] = {}
        self.tenant_users: dict[int, int] = {}
        self.tenant_topics: dict[int, set[str]] = {}  # the keys of `topics`, by tenant

    async def put(
        self, *, tenant_id: int, topic: str, process: str, user: str, connections: int, info: Info
    ) -> Put:
        state = self.topics.get((tenant_id, topic))
        if state is None:
            state = _Topic()
        key = (process, user)
        if key in state.entries:
            state.entries[key] = (connections, info)
            return Put(listed=True, joined=False, occupied=False)
        new_user = user not in state.holders
        if (
            new_user
            and listed_user(user)
            and (
                state.listed >= settings.EVENTHUB_PRESENCE_MAX_PER_TOPIC
                or self.tenant_users.get(tenant_id, 0) >= settings.EVENTHUB_PRESENCE_MAX_PER_TENANT
            )
        ):
            return Put(listed=False, joined=False, occupied=False)
        occupied = not state.entries
        self.topics[(tenant_id, topic)] = state
        self.tenant_topics.setdefault(tenant_id, set()).add(topic)
        state.entries[key] = (connections, info)
        state.holders[user] = state.holders.get(user, 0) + 1
        if new_user and listed_user(user):
            self.tenant_users[tenant_id] = self.tenant_users.get(tenant_id, 0) + 1
        return Put(listed=True, joined=new_user, occupied=occupied)

    async def drop(self, *, tenant_id: int, topic: str, process: str, user: str) -> Drop:
        state = self.topics.get((tenant_id, topic))
        if state is None or state.entries.pop((process, user), None) is None:
            return Drop(left=False, vacated=False)
        left = False
        state.holders[user] -= 1
        if not state.holders[user]:
            del state.holders[user]
            left = True
            if listed_user(user):
                self.tenant_users[tenant_id] -= 1
                if not self.tenant_users[tenant_id]:
                    del self.tenant_users[tenant_id]
        if not state.entries:
            del self.topics[(tenant_id, topic)]
            present = self.tenant_topics[tenant_id]
            present.discard(topic)
            if not present:
                del self.tenant_topics[tenant_id]
            return Drop(left=left, vacated=True)
        return Drop(left=left, vacated=False)

    async def snapshot(self, *, tenant_id: int, topic: str) -> dict:
        state = self.topics.get((tenant_id, topic))
        return snapshot_from(state.entries if state else {})

    async def present_topics(self, *, tenant_id: int, limit: int) -> dict:
        present = self.tenant_topics.get(tenant_id, set())
        snapshots = {
            topic: snapshot_from(self.topics[(tenant_id, topic)].entries) for topic in present
        }
        return topics_from(snapshots, limit=limit, more=False)

    async def heartbeat(self, *, process: str) -> list[Change]:
        return []

    async def release(self, *, process: str, after: float) -> None:
        return None
