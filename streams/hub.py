"""Provides the per-process hub: the one channel-layer member per process that fans each event,
encoded once, out to every local connection whose topics match."""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

from channels.layers import get_channel_layer
from django.conf import settings

from streams import metrics
from streams.envelope import Envelope
from streams.groups import tenant_group

logger = logging.getLogger(__name__)

Send = Callable[[dict], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]

PING_WS = {"type": "websocket.send", "text": '{"type":"ping"}'}
PING_SSE = {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}


class ConnectionLimitReached(Exception):
    """Raised by Hub.subscribe when the tenant has no connection left."""


class Subscriber:
    """One live connection as the hub sees it; made by a consumer when it connects."""

    __slots__ = (
        "close",
        "closed",
        "connection_id",
        "key_id",
        "last_seen",
        "last_seq",
        "patterns",
        "pending",
        "send",
        "tenant_id",
        "transport",
    )

    def __init__(
        self,
        *,
        transport: str,
        tenant_id: int,
        key_id: int | None,
        patterns: Iterable[str],
        send: Send,
        close: Close,
    ) -> None:
        self.connection_id = uuid.uuid4().hex
        self.transport = transport
        self.tenant_id = tenant_id
        self.key_id = key_id
        self.patterns = tuple(patterns)
        self.send = send
        self.close = close
        self.last_seq = 0
        self.last_seen = time.monotonic()
        # Not None while replaying: live events wait here so replay hands over without a gap.
        self.pending: list[Envelope] | None = None
        self.closed = False


class TenantHub:
    """One tenant's local connections, indexed by pattern so matching costs no scan."""

    __slots__ = ("by_transport", "exact", "last_seq", "prefixes", "subscribers", "wildcard")

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.wildcard: set[Subscriber] = set()
        self.exact: dict[str, set[Subscriber]] = {}
        self.prefixes: dict[str, set[Subscriber]] = {}
        self.by_transport = {"websocket": 0, "sse": 0}
        self.last_seq = 0

    def add(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)
        self.by_transport[sub.transport] += 1
        for pattern in sub.patterns:
            if pattern == "*":
                self.wildcard.add(sub)
            elif pattern.endswith("*"):
                self.prefixes.setdefault(pattern[:-1], set()).add(sub)
            else:
                self.exact.setdefault(pattern, set()).add(sub)

    def remove(self, sub: Subscriber) -> bool:
        if sub not in self.subscribers:
            return False
        self.subscribers.discard(sub)
        self.by_transport[sub.transport] -= 1
        for pattern in sub.patterns:
            if pattern == "*":
                self.wildcard.discard(sub)
                continue
            index, key = (
                (self.prefixes, pattern[:-1]) if pattern.endswith("*") else (self.exact, pattern)
            )
            members = index.get(key)
            if members is not None:
                members.discard(sub)
                if not members:
                    del index[key]
        return True

    def recipients(self, topic: str) -> Iterable[Subscriber]:
        if not self.exact and not self.prefixes:
            return tuple(self.wildcard)
        found = set(self.wildcard)
        members = self.exact.get(topic)
        if members:
            found |= members
        for prefix, members in self.prefixes.items():
            if topic.startswith(prefix):
                found |= members
        return found


class Hub:
    """The process's hub; bound to the event loop it was started on."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.tenants: dict[int, TenantHub] = {}
        self._tasks: list[asyncio.Task] = []
        self._start_lock = asyncio.Lock()
        self._group_lock = asyncio.Lock()
        self.closing = False

    # Lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Joins the layer and starts the receive and heartbeat loops; idempotent."""
        async with self._start_lock:
            if self.channel is not None:
                return
            self.channel = await self.layer.new_channel(prefix="eventhub.hub")
            self._tasks = [
                self.loop.create_task(self._receive_loop(), name="eventhub-hub-receive"),
                self.loop.create_task(self._heartbeat_loop(), name="eventhub-hub-heartbeat"),
            ]

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Closes every local connection and stops the loops; runs before the process exits."""
        self.closing = True
        for tenant in list(self.tenants.values()):
            for sub in list(tenant.subscribers):
                await self.close(sub, code, reason)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # Membership ----------------------------------------------------------------------------

    def count(self, tenant_id: int) -> dict[str, int]:
        tenant = self.tenants.get(tenant_id)
        return dict(tenant.by_transport) if tenant else {"websocket": 0, "sse": 0}

    async def subscribe(self, sub: Subscriber, *, max_connections: int | None) -> None:
        """Registers a connection; raises ConnectionLimitReached when the tenant is full."""
        await self.start()
        async with self._group_lock:
            tenant = self.tenants.get(sub.tenant_id)
            if tenant is None:
                tenant = self.tenants[sub.tenant_id] = TenantHub()
                await self.layer.group_add(tenant_group(sub.tenant_id), self.channel)
            if max_connections is not None and len(tenant.subscribers) >= max_connections:
                if not tenant.subscribers:
                    await self._forget_tenant(sub.tenant_id)
                raise ConnectionLimitReached
            tenant.add(sub)
        metrics.CONNECTIONS.labels(sub.transport).inc()

    async def unsubscribe(self, sub: Subscriber) -> None:
        """Releases a connection; called from every disconnect path, safe to call twice."""
        sub.closed = True
        async with self._group_lock:
            tenant = self.tenants.get(sub.tenant_id)
            if tenant is None or not tenant.remove(sub):
                return
            metrics.CONNECTIONS.labels(sub.transport).dec()
            if not tenant.subscribers:
                await self._forget_tenant(sub.tenant_id)

    async def _forget_tenant(self, tenant_id: int) -> None:
        del self.tenants[tenant_id]
        with contextlib.suppress(Exception):
            await self.layer.group_discard(tenant_group(tenant_id), self.channel)

    async def close(self, sub: Subscriber, code: int, reason: str) -> None:
        """Ends one connection from the server side (close frame, or the end of the SSE body)."""
        if sub.closed:
            return
        sub.closed = True
        metrics.CONNECTIONS_CLOSED.labels(str(code)).inc()
        with contextlib.suppress(Exception):
            await sub.close(code, reason)
        await self.unsubscribe(sub)

    # Delivery ------------------------------------------------------------------------------

    async def go_live(self, sub: Subscriber) -> None:
        """Ends a connection's replay: sends what arrived live meanwhile, then live events."""
        while sub.pending:
            waiting, sub.pending = sub.pending, []
            for envelope in waiting:
                await self._write(sub, envelope, *self._messages(envelope))
        sub.pending = None

    @staticmethod
    def _messages(envelope: Envelope) -> tuple[dict, dict]:
        return (
            {"type": "websocket.send", "text": envelope.frame},
            {"type": "http.response.body", "body": envelope.sse_bytes(), "more_body": True},
        )

    async def _write(self, sub: Subscriber, envelope: Envelope, ws: dict, sse: dict) -> bool:
        if sub.closed or envelope.seq <= sub.last_seq:
            return False
        sub.last_seq = envelope.seq
        try:
            await sub.send(ws if sub.transport == "websocket" else sse)
        except Exception:
            # One broken connection must not stop the broadcast to the others.
            logger.warning("dropping connection %s after a failed send", sub.connection_id)
            await self.close(sub, 1011, "send failed")
            return False
        return True

    async def deliver(self, tenant_id: int, envelopes: list[Envelope]) -> None:
        """Hands events, in seq order, to this process's matching connections."""
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return
        for envelope in envelopes:
            if envelope.seq <= tenant.last_seq:
                continue  # already delivered by this process
            tenant.last_seq = envelope.seq
            started = time.perf_counter()
            recipients = tenant.recipients(envelope.topic)
            if not recipients:
                continue
            ws = {"type": "websocket.send", "text": envelope.frame}
            sse = None
            delivered = 0
            for sub in recipients:
                if sub.pending is not None:
                    sub.pending.append(envelope)
                    continue
                if sub.closed or envelope.seq <= sub.last_seq:
                    continue
                sub.last_seq = envelope.seq
                if sub.transport == "websocket":
                    message = ws
                else:
                    if sse is None:
                        sse = {
                            "type": "http.response.body",
                            "body": envelope.sse_bytes(),
                            "more_body": True,
                        }
                    message = sse
                try:
                    await sub.send(message)
                    delivered += 1
                except Exception:
                    logger.warning("dropping connection %s after a failed send", sub.connection_id)
                    await self.close(sub, 1011, "send failed")
            metrics.count_delivered(tenant_id, delivered)
            metrics.BROADCAST_SECONDS.observe(time.perf_counter() - started)

    async def _receive_loop(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub receive failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if message.get("type") != "event.published":
                continue
            try:
                tenant_id = message["tenant"]
                envelopes = [Envelope.from_wire(tenant_id, wire) for wire in message["events"]]
                await self.deliver(tenant_id, envelopes)
            except Exception:
                logger.exception("hub failed to deliver a message")

    # Heartbeat -----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = settings.EVENTHUB_HEARTBEAT_INTERVAL
        stale = settings.EVENTHUB_STALE_TIMEOUT
        tick = min(1.0, interval / 2, stale / 4)
        next_ping = time.monotonic() + interval
        while True:
            await asyncio.sleep(tick)
            try:
                now = time.monotonic()
                ping = now >= next_ping
                if ping:
                    next_ping = now + interval
                await self._beat(now, ping, stale)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("heartbeat tick failed")

    async def _beat(self, now: float, ping: bool, stale: float) -> None:
        for tenant in list(self.tenants.values()):
            for sub in list(tenant.subscribers):
                if sub.closed:
                    continue
                if sub.transport == "websocket" and now - sub.last_seen > stale:
                    await self.close(sub, 4408, "no frame from the client in time")
                    continue
                if ping:
                    try:
                        await sub.send(PING_WS if sub.transport == "websocket" else PING_SSE)
                    except Exception:
                        await self.close(sub, 1011, "send failed")
