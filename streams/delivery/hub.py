"""Provides the per-process hub: the one channel-layer member per process that fans each event,
encoded once, out to every local connection whose topics match."""

import asyncio
import contextlib
import logging
import random
import time

from channels.db import database_sync_to_async
from django.conf import settings

from streams import metrics
from streams.delivery.daphne_transport import websocket_text_frame
from streams.delivery.subscribers import Subscriber, TenantHub
from streams.engine import Engine
from streams.envelope import Envelope
from streams.groups import tenant_group
from streams.loop_watch import loop_watch
from streams.tasks import background_task
from tenants.access import TENANT_SUSPENDED
from tenants.selectors import credentials_revoked, session_grants_revoked

logger = logging.getLogger(__name__)


# How often each hub re-checks that its connections' keys and tenants are still valid.
AUTH_RECHECK_SECONDS = 2.0
# How long one tenant's deliveries may hold the loop before the others get a turn.
FAIR_SLICE_SECONDS = 0.001
# At most this many events, or about this many bytes of them, are broadcast as one run.
RUN_EVENTS = 100
RUN_BYTES = 256 * 1024

PING_WS = {"type": "websocket.send", "text": '{"type":"ping"}'}
PING_SSE = {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}
PING_WS_FRAME = websocket_text_frame(PING_WS["text"])


class _Frames:
    """A run's events for the connections that match the same topics of it, and their bytes
    on each transport, built on first use from each event's frame, encoded once per run
    (`encoded`, shared by every _Frames of the run)."""

    __slots__ = ("_encoded", "_sse", "_websocket", "envelopes")

    def __init__(self, envelopes: list[Envelope], encoded: dict[tuple[str, int], bytes]) -> None:
        self.envelopes = envelopes
        self._encoded = encoded
        self._websocket: bytes | None = None
        self._sse: bytes | None = None

    def _bytes(self, transport: str, envelope: Envelope) -> bytes:
        key = (transport, envelope.seq)
        data = self._encoded.get(key)
        if data is None:
            if transport == "websocket":
                data = websocket_text_frame(envelope.frame)
            else:
                data = envelope.sse_bytes()
            self._encoded[key] = data
        return data

    def websocket(self) -> bytes:
        if self._websocket is None:
            self._websocket = b"".join(self._bytes("websocket", e) for e in self.envelopes)
        return self._websocket

    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = b"".join(self._bytes("sse", e) for e in self.envelopes)
        return self._sse


class ConnectionLimitReached(Exception):
    """Raised by Hub.subscribe when the tenant has no connection left."""


class Hub:
    """The process's hub; bound to the event loop it was started on."""

    def __init__(self, backend: Engine) -> None:
        self.loop = asyncio.get_running_loop()
        self.backend = backend
        self._credentials_revoked = database_sync_to_async(credentials_revoked)
        self._session_grants_revoked = database_sync_to_async(session_grants_revoked)
        self.layer = backend.layer
        self.channel: str | None = None
        self.tenants: dict[int, TenantHub] = {}
        self._tasks: list[asyncio.Task] = []
        self._drains: set[asyncio.Task] = set()
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
                background_task(self._receive_loop(), name="eventhub-hub-receive"),
                background_task(self._heartbeat_loop(), name="eventhub-hub-heartbeat"),
                background_task(loop_watch(), name="eventhub-loop-watch"),
            ]

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Closes every local connection and stops the loops; runs before the process exits.

        Every close is sent before anything that could yield to the loop, where the server is
        cancelling the consumers at the same time.
        """
        self.closing = True
        subs = [sub for tenant in self.tenants.values() for sub in tenant.subscribers]
        for sub in subs:
            if not sub.closed:
                sub.closed = True
                with contextlib.suppress(Exception):
                    await sub.close(code, reason)
        for sub in subs:
            await self.unsubscribe(sub)
        tasks = [*self._tasks, *self._drains]
        for task in tasks:
            task.cancel()
        for task in tasks:
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
                # Joined first, then read: every later event arrives through the group.
                try:
                    tenant.last_seq = await self.backend.current_seq(sub.tenant_id)
                    tenant.epoch = await self.backend.current_epoch(sub.tenant_id) or ""
                except Exception:
                    await self._forget_tenant(sub.tenant_id)
                    raise
                early, tenant.early = tenant.early, []
                await self.deliver(sub.tenant_id, early)
            if max_connections is not None:
                # Checked and counted in one step of the engine, so that connects arriving at
                # once on several processes cannot overshoot the limit.
                admitted = False
                try:
                    admitted = await self.backend.connection_acquire(
                        sub.tenant_id, sub.transport, max_connections, dict(tenant.by_transport)
                    )
                finally:
                    if not admitted and not tenant.subscribers:
                        await self._forget_tenant(sub.tenant_id)
                if not admitted:
                    raise ConnectionLimitReached
            tenant.add(sub)
        metrics.CONNECTIONS.labels(sub.transport).inc()
        if max_connections is None:  # a limited tenant's connection was counted when admitted
            await self.backend.connection_change(sub.tenant_id, sub.transport, 1)

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
        await self.backend.connection_change(sub.tenant_id, sub.transport, -1)

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

    def _drop(self, sub: Subscriber, code: int = 1011, reason: str = "send failed") -> None:
        """Closes a connection that failed or fell behind, outside the loop that found it."""
        if not sub.closed:
            self.loop.create_task(self.close(sub, code, reason))

    # Delivery ------------------------------------------------------------------------------

    async def go_live(self, sub: Subscriber) -> None:
        """Ends a connection's replay: sends what arrived live meanwhile, then live events."""
        while sub.pending:
            for envelope in sub.take_pending():
                epoch = envelope.epoch
                if sub.epoch is not None and epoch != sub.epoch:
                    # The hub re-started the sequence meanwhile (stragglers of an old epoch
                    # never reach `pending`): the new run counts from its own start.
                    sub.last_seq = 0
                sub.epoch = epoch
                if sub.closed or envelope.seq <= sub.last_seq:
                    continue
                sub.last_seq = envelope.seq
                if sub.transport == "websocket":
                    message = {"type": "websocket.send", "text": envelope.frame}
                else:
                    body = envelope.sse_bytes()
                    message = {"type": "http.response.body", "body": body, "more_body": True}
                try:
                    await sub.send(message)
                except Exception:
                    self._drop(sub)
                    return
                self.backend.count_delivered(sub.tenant_id, 1)
        sub.pending, sub.pending_bytes = None, 0

    async def deliver(self, tenant_id: int, envelopes: list[Envelope]) -> None:
        """Hands events to this process's matching connections, each once and in seq order.

        Events can arrive out of order or not at all (several publishing processes; a layer
        that drops): a gap is filled from the replay buffer, once for the whole process, and
        what was already delivered is dropped.
        """
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return
        async with tenant.lock:
            if self.tenants.get(tenant_id) is not tenant:
                return  # its last connection left meanwhile
            if tenant.last_seq is None:
                tenant.early.extend(envelopes)
                return
            await self._deliver_in_order(tenant_id, tenant, envelopes)

    def _enqueue(self, tenant_id: int, envelopes: list[Envelope]) -> None:
        """Queues a layer message for its tenant's delivery task (started when none runs).

        The receive loop never waits for a delivery: a tenant whose burst takes a while to fan
        out delays only its own later events, and the others' are delivered in between.
        """
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return
        if tenant.inbox_events + len(envelopes) > settings.EVENTHUB_HUB_INBOX_EVENTS:
            # Bounded: what is dropped here is filled from the replay buffer when the next
            # event shows the gap, or by the catch-up tick.
            metrics.HUB_INBOX_DROPPED.inc(len(envelopes))
            return
        tenant.inbox.append(envelopes)
        tenant.inbox_events += len(envelopes)
        if not tenant.draining:
            tenant.draining = True
            task = self.loop.create_task(self._drain(tenant_id, tenant))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)

    async def _drain(self, tenant_id: int, tenant: TenantHub) -> None:
        """Delivers a tenant's queued layer messages in order; ends when its inbox is empty."""
        try:
            while tenant.inbox:
                envelopes = tenant.inbox.popleft()
                tenant.inbox_events -= len(envelopes)
                try:
                    await self.deliver(tenant_id, envelopes)
                except Exception:
                    logger.exception("hub failed to deliver to tenant %s", tenant_id)
                # Other tenants' deliveries and requests go next.
                await asyncio.sleep(0)
        finally:
            tenant.draining = False

    async def _deliver_in_order(
        self, tenant_id: int, tenant: TenantHub, envelopes: list[Envelope]
    ) -> None:
        run: list[Envelope] = []  # in seq order, broadcast together (`_broadcast_run`)
        since = time.perf_counter()
        for envelope in envelopes:
            if time.perf_counter() - since > FAIR_SLICE_SECONDS:
                # A long batch of one tenant lets the others' events through between its
                # runs: theirs wait for about one broadcast, not the whole batch.
                await asyncio.sleep(0)
                since = time.perf_counter()
            epoch = envelope.epoch
            if epoch != tenant.epoch:
                # What the run holds is of the epoch before: out first, as it came.
                await self._broadcast_run(tenant_id, tenant, run)
                if epoch in tenant.retired_epochs:
                    continue  # a straggler from before a re-seed
                if tenant.epoch and epoch != await self._current_epoch(tenant_id, epoch):
                    tenant.retired_epochs.add(epoch)
                    continue  # a straggler from before the re-seed this hub already follows
                if tenant.epoch:
                    # The sequence was re-seeded (an emptied Redis): a new run of seqs starts,
                    # somewhere at or below this one. Its earlier events, which other processes
                    # may still be sending, are filled from the buffer just below.
                    tenant.retired_epochs.add(tenant.epoch)
                    self._restart_sequence(tenant, 0)
                tenant.epoch = epoch
            if envelope.seq <= tenant.last_seq:
                continue
            if envelope.seq > tenant.last_seq + 1:
                for missing in await self._fill(tenant_id, tenant.last_seq + 1, envelope.seq - 1):
                    if missing.seq > tenant.last_seq and missing.epoch == epoch:
                        tenant.last_seq = missing.seq
                        await self._add_to_run(tenant_id, tenant, run, missing)
            tenant.last_seq = envelope.seq
            await self._add_to_run(tenant_id, tenant, run, envelope)
        await self._broadcast_run(tenant_id, tenant, run)

    async def _add_to_run(
        self, tenant_id: int, tenant: TenantHub, run: list[Envelope], envelope: Envelope
    ) -> None:
        run.append(envelope)
        if len(run) >= RUN_EVENTS or sum(len(e.frame) for e in run) >= RUN_BYTES:
            await self._broadcast_run(tenant_id, tenant, run)

    async def _current_epoch(self, tenant_id: int, default: str) -> str:
        """The tenant's epoch now; read only when an event of another epoch arrives."""
        try:
            return await self.backend.current_epoch(tenant_id) or default
        except Exception:
            return default  # unknown: take the event's epoch as the new one, as before

    @staticmethod
    def _restart_sequence(tenant: TenantHub, last_seq: int) -> None:
        tenant.last_seq = last_seq
        for sub in tenant.subscribers:
            sub.last_seq = min(sub.last_seq, last_seq)

    async def _fill(self, tenant_id: int, first: int, last: int) -> list[Envelope]:
        try:
            return await self.backend.buffered(tenant_id, first, last)
        except Exception:
            logger.warning("could not fill seq %d..%d of tenant %s", first, last, tenant_id)
            return []

    async def _broadcast_run(self, tenant_id: int, tenant: TenantHub, run: list[Envelope]) -> None:
        """Hands a run of events (in seq order, all past `tenant.last_seq` when they were added)
        to their matching connections, then empties `run`.

        One event goes through `_broadcast`. Several go to each connection as one write of all
        the frames it matches: a batch of 50 to 2000 connections is 2000 writes, not 100 000.
        Connections that match the same topics of the run share those bytes, built once.
        """
        if len(run) <= 1:
            if run:
                await self._broadcast(tenant_id, tenant, run.pop())
            return
        events, run[:] = list(run), []
        started = since = time.perf_counter()
        topics = dict.fromkeys(e.topic for e in events)
        matched: dict[Subscriber, list[str]] = {}
        for topic in topics:
            for sub in tenant.recipients(topic):
                its = matched.get(sub)
                if its is None:
                    matched[sub] = [topic]
                else:
                    its.append(topic)
        shared: dict[tuple[str, ...], _Frames] = {}
        encoded: dict[tuple[str, int], bytes] = {}
        delivered = 0
        for count, (sub, its_topics) in enumerate(matched.items(), 1):
            if not count % 64 and time.perf_counter() - since > FAIR_SLICE_SECONDS:
                await asyncio.sleep(0)  # as in `_broadcast`
                since = time.perf_counter()
            key = tuple(its_topics)
            frames = shared.get(key)
            if frames is None:
                frames = shared[key] = _Frames(
                    events if len(key) == len(topics) else [e for e in events if e.topic in key],
                    encoded,
                )
            if sub.pending is not None:
                for envelope in frames.envelopes:
                    if not sub.hold(envelope):
                        self._drop(sub, 4008, "slow consumer: reconnect with your last id")
                        break
                continue
            if sub.closed:
                continue
            if frames.envelopes[0].seq <= sub.last_seq:
                # It joined after some of these were counted delivered: not them again.
                newer = [e for e in frames.envelopes if e.seq > sub.last_seq]
                if not newer:
                    continue
                frames = _Frames(newer, encoded)
            sub.last_seq = frames.envelopes[-1].seq
            try:
                if sub.write_frame is not None and sub.write_frame(frames.websocket()):
                    delivered += len(frames.envelopes)
                    continue
                if sub.transport == "websocket":
                    for envelope in frames.envelopes:
                        await sub.send({"type": "websocket.send", "text": envelope.frame})
                else:
                    await sub.send(
                        {"type": "http.response.body", "body": frames.sse(), "more_body": True}
                    )
                delivered += len(frames.envelopes)
            except Exception:
                # One broken connection must not stop the broadcast to the others.
                logger.warning("dropping connection %s after a failed send", sub.connection_id)
                self._drop(sub)
        self.backend.count_delivered(tenant_id, delivered)
        metrics.BROADCAST_SECONDS.observe(time.perf_counter() - started)

    async def _broadcast(self, tenant_id: int, tenant: TenantHub, envelope: Envelope) -> None:
        started = time.perf_counter()
        recipients = tenant.recipients(envelope.topic)
        if not recipients:
            return
        ws = {"type": "websocket.send", "text": envelope.frame}
        ws_bytes = None
        sse = None
        delivered = 0
        since = started
        for count, sub in enumerate(recipients, 1):
            if not count % 64 and time.perf_counter() - since > FAIR_SLICE_SECONDS:
                # A broadcast to thousands is cut into turns too: what other tenants need
                # from the loop waits for one slice of it, not all of it. The tenant's next
                # broadcast still starts after this one ends (its delivery lock).
                await asyncio.sleep(0)
                since = time.perf_counter()
            if sub.pending is not None:
                if not sub.hold(envelope):
                    self._drop(sub, 4008, "slow consumer: reconnect with your last id")
                continue
            if sub.closed or envelope.seq <= sub.last_seq:
                continue
            sub.last_seq = envelope.seq
            if sub.write_frame is not None:
                if ws_bytes is None:
                    ws_bytes = websocket_text_frame(envelope.frame)
                try:
                    if sub.write_frame(ws_bytes):
                        delivered += 1
                        continue
                except Exception:
                    logger.warning("dropping connection %s after a failed write", sub.connection_id)
                    self._drop(sub)
                    continue
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
                # One broken connection must not stop the broadcast to the others.
                logger.warning("dropping connection %s after a failed send", sub.connection_id)
                self._drop(sub)
        self.backend.count_delivered(tenant_id, delivered)
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
                self._enqueue(tenant_id, envelopes)
            except Exception:
                logger.exception("hub failed to take a message")

    # Heartbeat -----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = settings.EVENTHUB_HEARTBEAT_INTERVAL
        stale = settings.EVENTHUB_STALE_TIMEOUT
        tick = min(1.0, interval / 2, stale / 4)
        next_auth_check = time.monotonic() + AUTH_RECHECK_SECONDS
        while True:
            await asyncio.sleep(tick)
            try:
                now = time.monotonic()
                await self._beat(now, interval, stale)
                await self._catch_up()
                if now >= next_auth_check:
                    next_auth_check = now + AUTH_RECHECK_SECONDS
                    await self._close_revoked()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("heartbeat tick failed")

    async def _close_revoked(self) -> None:
        """Closes connections whose key was revoked, expired or lost its `subscribe` scope, or
        whose tenant was suspended, since they connected (4403; an SSE stream ends)."""
        subs = [
            sub
            for tenant in self.tenants.values()
            for sub in tenant.subscribers
            if not sub.opening  # not welcomed yet: checked on the next round
        ]
        if not subs:
            return
        key_ids = {sub.key_id for sub in subs if sub.key_id is not None}
        tenant_ids = {sub.tenant_id for sub in subs}
        grants = {_grant(sub) for sub in subs if sub.session is not None}
        forbidden = ended = frozenset()
        try:
            bad_keys, bad_tenants = await self._credentials_revoked(
                key_ids=key_ids, tenant_ids=tenant_ids
            )
            if grants:  # most hubs hold no dashboard session: no thread hop for nothing
                forbidden, ended = await self._session_grants_revoked(grants=grants)
        except Exception:
            logger.warning("could not re-check subscriber credentials; will retry")
            return
        for sub in subs:
            if sub.tenant_id in bad_tenants:
                await self.close(sub, 4403, TENANT_SUSPENDED)
            elif sub.key_id is not None and sub.key_id in bad_keys:
                reason = "The key of this connection was revoked, expired or lost 'subscribe'."
                await self.close(sub, 4403, reason)
            elif sub.session is not None and _grant(sub) in forbidden:
                await self.close(sub, 4403, "This session may no longer see this tenant.")
            elif sub.session is not None and _grant(sub) in ended:
                # Not final: after logging in again the browser holds a new session and is
                # admitted when it reconnects; after a logout it is refused then (4401).
                await self.close(sub, 1012, "The session changed; reconnect.")

    async def _catch_up(self) -> None:
        """Delivers events whose layer message never came (the layer is at-most-once): each
        tick, a tenant whose sequence is ahead of what this process delivered is filled from
        the replay buffer.

        A tenant whose delivery task runs is left to it: what it has queued would be read
        again, and the heartbeat, which serves every tenant, would wait for its lock. A gap
        its queue dropped shows with its next event, or on a tick after the task ends."""
        for tenant_id, tenant in list(self.tenants.items()):
            if tenant.last_seq is None or tenant.draining:
                continue
            try:
                current = await self.backend.current_seq(tenant_id)
            except Exception:
                continue
            if current > tenant.last_seq:
                missing = await self._fill(tenant_id, tenant.last_seq + 1, current)
                if missing:
                    await self.deliver(tenant_id, missing)

    async def _beat(self, now: float, interval: float, stale: float) -> None:
        """One heartbeat tick: closes stale connections and slow consumers, and pings each
        connection whose own turn has come.

        Each connection is pinged every `interval` from a first ping at a random point of the
        second half of its first interval, not all at once: a crowd that connected together
        would otherwise be pinged together, and its thousands of pongs, arriving together,
        held the loop for a few hundred milliseconds (bench/noisy.py burst) every interval.
        Never in the first half: a client needs no ping that soon after its welcome.
        """
        max_backlog = settings.EVENTHUB_MAX_BUFFER_BYTES
        since = time.perf_counter()
        for tenant in list(self.tenants.values()):
            for count, sub in enumerate(list(tenant.subscribers), 1):
                if not count % 64 and time.perf_counter() - since > FAIR_SLICE_SECONDS:
                    # Thousands of pings at once held the loop for tens of milliseconds.
                    await asyncio.sleep(0)
                    since = time.perf_counter()
                if sub.closed or sub.opening:
                    continue  # its welcome must be the first thing it gets
                if sub.transport == "websocket" and now - sub.last_seen > stale:
                    await self.close(sub, 4408, "no frame from the client in time")
                    continue
                # Checked once a tick, after the server had time to flush: a burst may pass
                # through, a client that stopped reading may not.
                if sub.backlog is not None and sub.backlog() > max_backlog:
                    await self.close(sub, 4008, "slow consumer: reconnect with your last id")
                    continue
                if not sub.next_ping:
                    sub.next_ping = now + random.uniform(interval / 2, interval)
                if now >= sub.next_ping:
                    sub.next_ping = now + interval
                    try:
                        # Prebuilt, as an event's frame is; through ASGI when it declines.
                        if sub.write_frame is None or not sub.write_frame(PING_WS_FRAME):
                            await sub.send(PING_WS if sub.transport == "websocket" else PING_SSE)
                    except Exception:
                        self._drop(sub)


def _grant(sub: Subscriber) -> tuple[int, int, str]:
    """(user, tenant, session key) of a connection a dashboard session opened."""
    user_id, session_key = sub.session
    return user_id, sub.tenant_id, session_key


__all__ = ["ConnectionLimitReached", "Hub", "Subscriber", "TenantHub"]
