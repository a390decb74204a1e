"""Provides the process's presence tracker: its connections on each exact topic, per user, and
the grace before a user whose last connection went away leaves, written to the shared store
(`streams.presence.store`) and announced as changes (`streams.presence.changes`).

Made by the hub, fed by its membership (`Hub.subscribe` / `unsubscribe`) and its heartbeat
(`Supervisor`), never by the publish path."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from streams.presence.changes import (
    ANONYMOUS,
    JOIN,
    LEAVE,
    OCCUPIED,
    UNLISTED,
    VACATED,
    Change,
)
from streams.presence.store import Info, PresenceStore, listed_user

logger = logging.getLogger(__name__)

Notify = Callable[[Change], Awaitable[None]]

RETRY_SECONDS = 1.0  # between attempts to take a user out of a store that did not answer


def exact_topics(patterns: Iterable[str]) -> list[str]:
    """The topics of a subscription a connection is present on: its patterns without `*`."""
    return [p for p in dict.fromkeys(patterns) if not p.endswith("*")]


@dataclass
class _Entry:
    connections: int
    info: Info
    grace: asyncio.TimerHandle | None = None


class PresenceTracker:
    """This process's share of presence. Every write to the store goes through one lock, in
    the order the connections came and went, so that a connection's leave never overtakes its
    join."""

    def __init__(self, *, store: PresenceStore, process: str, notify: Notify) -> None:
        self.store = store
        self.process = process
        self.notify = notify
        self.loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        # (tenant, topic, user or ANONYMOUS / UNLISTED) -> this process's connections there.
        self._entries: dict[tuple[int, str, str], _Entry] = {}
        # connection id -> (tenant, [(topic, the entry key it counts under)]).
        self._connections: dict[str, tuple[int, list[tuple[str, str]]]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def connect(
        self,
        *,
        connection_id: str,
        tenant_id: int,
        patterns: Iterable[str],
        user: str | None,
        info: Info,
    ) -> None:
        """Called when a connection joins the hub, before its welcome (whose snapshot then
        holds it): counts it on each exact topic of its subscription. Never raises: a store
        that cannot be reached costs presence, not the connection."""
        topics = exact_topics(patterns)
        if not topics:
            return
        # Known before the lock is taken: a disconnect meanwhile queues behind this connect.
        held: list[tuple[str, str]] = []
        self._connections[connection_id] = (tenant_id, held)
        async with self._lock:
            for topic in topics:
                try:
                    held.append((topic, await self._add(tenant_id, topic, user or ANONYMOUS, info)))
                except Exception:
                    logger.warning("presence: could not count a connection on %r", topic)

    def disconnect(self, connection_id: str) -> None:
        """Called when a connection leaves the hub (safe to call twice): its entries count one
        connection less now, and a user's last one there leaves after the grace."""
        held = self._connections.pop(connection_id, None)
        if held is not None:
            self._spawn(self._remove_all(*held))

    async def heartbeat(self) -> None:
        """Called on each heartbeat tick: renews this process's lease, and announces what the
        entries of processes whose lease ran out took with them."""
        for change in await self.store.heartbeat(process=self.process):
            await self._notify(change)

    async def close(self) -> None:
        """Called at shutdown: what this process holds stays for the grace (its clients
        reconnect elsewhere meanwhile), then the other processes take it out."""
        for entry in self._entries.values():
            if entry.grace is not None:
                entry.grace.cancel()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.store.release(process=self.process, after=settings.EVENTHUB_PRESENCE_GRACE)

    async def snapshot(self, *, tenant_id: int, topic: str) -> dict:
        return await self.store.snapshot(tenant_id=tenant_id, topic=topic)

    async def present_topics(self, *, tenant_id: int, limit: int) -> dict:
        return await self.store.present_topics(tenant_id=tenant_id, limit=limit)

    # ------------------------------------------------------------------------------------

    async def _add(self, tenant_id: int, topic: str, user: str, info: Info) -> str:
        key = (tenant_id, topic, user)
        entry = self._entries.get(key)
        if entry is not None:
            # Another tab, or back within the grace: neither joins again.
            entry.connections += 1
            if entry.grace is not None:
                entry.grace.cancel()
                entry.grace = None
            await self._put(key, entry)
            return user
        put = await self.store.put(
            tenant_id=tenant_id,
            topic=topic,
            process=self.process,
            user=user,
            connections=1,
            info=info,
        )
        if not put.listed:
            return await self._add(tenant_id, topic, UNLISTED, None)
        self._entries[key] = _Entry(1, info)
        if put.occupied:
            await self._notify(Change(OCCUPIED, tenant_id, topic))
        if put.joined and listed_user(user):
            await self._notify(Change(JOIN, tenant_id, topic, user, info or {}))
        return user

    async def _remove_all(self, tenant_id: int, held: list[tuple[str, str]]) -> None:
        async with self._lock:
            for topic, user in held:
                key = (tenant_id, topic, user)
                entry = self._entries.get(key)
                if entry is None:
                    continue
                entry.connections -= 1
                try:
                    # Still listed through the grace, with no connection counted.
                    await self._put(key, entry)
                except Exception:
                    logger.warning("presence: could not count a connection off %r", topic)
                if entry.connections <= 0 and entry.grace is None:
                    entry.grace = self.loop.call_later(
                        settings.EVENTHUB_PRESENCE_GRACE, self._graced, key
                    )

    def _graced(self, key: tuple[int, str, str]) -> None:
        self._spawn(self._gone(key))

    async def _gone(self, key: tuple[int, str, str]) -> None:
        async with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.connections > 0:
                return  # back within the grace
            tenant_id, topic, user = key
            try:
                drop = await self.store.drop(
                    tenant_id=tenant_id, topic=topic, process=self.process, user=user
                )
            except Exception:
                # This process's lease goes on: tried again until the store answers, or the
                # user is back.
                logger.warning("presence: could not take %r out of %r; will retry", user, topic)
                entry.grace = self.loop.call_later(RETRY_SECONDS, self._graced, key)
                return
            del self._entries[key]
            if drop.left and listed_user(user):
                await self._notify(Change(LEAVE, tenant_id, topic, user))
            if drop.vacated:
                await self._notify(Change(VACATED, tenant_id, topic))

    async def _put(self, key: tuple[int, str, str], entry: _Entry) -> None:
        tenant_id, topic, user = key
        await self.store.put(
            tenant_id=tenant_id,
            topic=topic,
            process=self.process,
            user=user,
            connections=max(0, entry.connections),
            info=entry.info,
        )

    async def _notify(self, change: Change) -> None:
        try:
            await self.notify(change)
        except Exception:
            logger.warning("presence: could not announce a %s on %r", change.kind, change.topic)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
