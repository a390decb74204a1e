"""Provides the per-process hub: the one channel-layer member per process that fans each event,
encoded once, out to every local connection whose topics match, each once and in seq order.
Its connections' upkeep (pings, stale and slow ones, revoked credentials, catch-up) is the
supervisor's (`streams.delivery.supervisor`).

Over 300 lines: membership and ordered delivery (epochs, gaps, runs, fair turns) share the
tenant's state and lock, and read best together."""

import asyncio
import contextlib
import json
import logging
import math
import time
from datetime import UTC, datetime

from django.conf import settings

from streams import metrics
from streams.delivery import fairness
from streams.delivery.subscribers import Frames, Subscriber, TenantHub
from streams.delivery.supervisor import Supervisor
from streams.engine import Engine
from streams.envelope import Envelope
from streams.groups import HUBS_GROUP, tenant_group
from streams.layer_messages import published_envelopes, revoked_token
from streams.loop_watch import loop_watch
from streams.presence.changes import JOIN, LEAVE, Change, presence_change, presence_message
from streams.presence.redis_store import RedisStore
from streams.presence.store import LocalStore, PresenceStore
from streams.presence.tracker import PresenceTracker
from streams.revoked_tokens import revoked_tokens
from streams.tasks import background_task
from streams.tokens import TokenGrant
from webhooks.notices import WebhookNotice

logger = logging.getLogger(__name__)


# At most this many events, or about this many bytes of them, are broadcast as one run.
RUN_EVENTS = 100
RUN_BYTES = 256 * 1024


class _Run(list):
    """Events in seq order, broadcast together (`Hub._broadcast_run`), with their frames'
    bytes counted as they are added (not summed again at every append)."""

    size = 0


class ConnectionLimitReached(Exception):
    """Raised by Hub.subscribe when the tenant has no connection left."""


class Hub:
    """The process's hub; bound to the event loop it was started on."""

    def __init__(self, backend: Engine) -> None:
        self.loop = asyncio.get_running_loop()
        self.backend = backend
        self.layer = backend.layer
        self.channel: str | None = None
        self.tenants: dict[int, TenantHub] = {}
        self._tasks: list[asyncio.Task] = []
        self._drains: set[asyncio.Task] = set()
        self._start_lock = asyncio.Lock()
        self._group_lock = asyncio.Lock()
        self.closing = False
        self.supervisor = Supervisor(self)
        redis = getattr(backend, "redis", None)
        store: PresenceStore = LocalStore() if redis is None else RedisStore(redis)
        self.presence = PresenceTracker(
            store=store,
            process=getattr(backend, "process_id", "local"),
            notify=self._presence_notify,
        )

    # Lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Joins the layer and starts the receive and heartbeat loops; idempotent."""
        async with self._start_lock:
            if self.channel is not None:
                return
            self.channel = await self.layer.new_channel(prefix="eventhub.hub")
            await self.layer.group_add(HUBS_GROUP, self.channel)
            self._tasks = [
                background_task(self._receive_loop(), name="eventhub-hub-receive"),
                background_task(self.supervisor.run(), name="eventhub-hub-heartbeat"),
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
        await self.presence.close()
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
        # A dashboard session is staff watching the tenant, not one of its users: it is not
        # counted in presence (it still gets the snapshot and join / leave frames it asked for).
        if sub.session is None:
            token = sub.token
            await self.presence.connect(
                connection_id=sub.connection_id,
                tenant_id=sub.tenant_id,
                patterns=sub.patterns,
                user=token.user if token is not None else None,
                info=token.info if token is not None else None,
            )
        if sub.closed:
            self.presence.disconnect(sub.connection_id)  # it left while it was being counted
        if max_connections is None:  # a limited tenant's connection was counted when admitted
            await self.backend.connection_change(sub.tenant_id, sub.transport, 1)

    async def unsubscribe(self, sub: Subscriber) -> None:
        """Releases a connection; called from every disconnect path, safe to call twice."""
        sub.closed = True
        if sub.expiry is not None:
            sub.expiry.cancel()
            sub.expiry = None
        async with self._group_lock:
            tenant = self.tenants.get(sub.tenant_id)
            if tenant is None or not tenant.remove(sub):
                return
            metrics.CONNECTIONS.labels(sub.transport).dec()
            self.presence.disconnect(sub.connection_id)
            if not tenant.subscribers:
                await self._forget_tenant(sub.tenant_id)
        await self.backend.connection_change(sub.tenant_id, sub.transport, -1)

    async def rejoin_groups(self) -> None:
        """Joins again every group this hub is in; the supervisor calls it well within the
        layer's `group_expiry`. Channels' layers forget a member after it (InMemoryChannelLayer:
        a day by default), and the hub joins a tenant's group once, with its first local
        connection: a tenant connected for longer would get its events only from the catch-up
        tick. For a layer without expiry (Redis pub/sub) the supervisor never calls it."""
        async with self._group_lock:
            if self.channel is None:
                return
            await self.layer.group_add(HUBS_GROUP, self.channel)
            for tenant_id in list(self.tenants):
                await self.layer.group_add(tenant_group(tenant_id), self.channel)

    async def _forget_tenant(self, tenant_id: int) -> None:
        del self.tenants[tenant_id]
        with contextlib.suppress(Exception):
            await self.layer.group_discard(tenant_group(tenant_id), self.channel)

    async def close(self, sub: Subscriber, code: int, reason: str) -> None:
        """Ends one connection from the server side (close frame, or the end of the SSE body)."""
        if sub.closed:
            return
        sub.closed = True
        await self._end(sub, code, reason)

    async def _end(self, sub: Subscriber, code: int, reason: str) -> None:
        metrics.CONNECTIONS_CLOSED.labels(str(code)).inc()
        with contextlib.suppress(Exception):
            await sub.close(code, reason)
        await self.unsubscribe(sub)

    def end_now(self, sub: Subscriber, code: int, reason: str) -> None:
        """Ends a connection from a plain callback: nothing is delivered to it from this
        instant on (a broadcast skips a closed connection), and its close goes out next."""
        if sub.closed:
            return
        sub.closed = True
        task = self.loop.create_task(self._end(sub, code, reason))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    def refresh(self, sub: Subscriber, token: TokenGrant) -> None:
        """Lets a connection go on under a new token (already checked by
        `admission.token_refresh`): its expiry and its key are the new token's from now on."""
        sub.token, sub.key_id = token, token.key_id
        self.watch_expiry(sub)

    def watch_expiry(self, sub: Subscriber) -> None:
        """Ends a connection opened with a token when the token expires (WebSocket 4401, the
        SSE stream ends), to the instant rather than at the supervisor's next tick. Called
        once the welcome is sent (`HubMembershipMixin.replay`: a stream cannot end before it
        has begun) and at each refresh; cancelled when the connection leaves the hub.

        A timer that fires late (a loop busy with a broadcast) is covered by the broadcasts
        themselves: an event accepted after a connection's expiry ends it instead
        (`_expire_due`)."""
        if sub.expiry is not None:
            sub.expiry.cancel()
            sub.expiry = None
        if sub.token is None or sub.closed:
            return
        expires_at = sub.token.expires_at
        sub.expiry = self.loop.call_later(max(0.0, expires_at - time.time()), self._expired, sub)
        tenant = self.tenants.get(sub.tenant_id)
        if tenant is not None and expires_at < tenant.next_expiry:
            tenant.next_expiry = expires_at

    def _expired(self, sub: Subscriber) -> None:
        sub.expiry = None
        self.end_now(sub, 4401, "The token has expired.")

    def _expire_due(self, tenant: TenantHub, accepted_at: float) -> None:
        """Ends the tenant's welcomed connections whose token expired by `accepted_at` (an
        event's acceptance: they must not get it), and notes when the next one expires. Runs
        only when an event is accepted after `tenant.next_expiry`: about once per expiry."""
        soonest = math.inf
        for sub in tenant.subscribers:
            token = sub.token
            if token is None or sub.closed:
                continue
            if token.expires_at <= accepted_at and not sub.opening:
                self.end_now(sub, 4401, "The token has expired.")
            elif token.expires_at < soonest:
                soonest = token.expires_at
        tenant.next_expiry = soonest

    def token_revoked(self, tenant_id: int, token_id: str, revoked_at: float) -> None:
        """Called with each `token.revoked` layer message (every hub gets it, from whichever
        process revoked the token): refuses the token here from now on, and ends its live
        connections (4403) at once rather than at the supervisor's next credential check."""
        revoked_tokens.remember(token_id, datetime.fromtimestamp(revoked_at, UTC))
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return
        for sub in list(tenant.subscribers):
            if sub.token is not None and sub.token.token_id == token_id:
                self.end_now(sub, 4403, "The token of this connection was revoked.")

    # Presence ------------------------------------------------------------------------------

    async def _presence_notify(self, change: Change) -> None:
        """Called by the tracker with each change it makes (once over all processes): every hub
        with a connection of the tenant gets it (`presence_changed`), this one included, and it
        goes, off this path, to the log queue or stream that makes its webhook deliveries."""
        notice = WebhookNotice.build(
            tenant_id=change.tenant_id,
            type=change.kind,
            topic=change.topic,
            user=change.user,
            info=change.info,
        )
        task = self.loop.create_task(self.backend.webhook_notice(notice))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)
        await self.layer.group_send(tenant_group(change.tenant_id), presence_message(change))

    def presence_changed(self, change: Change) -> None:
        """Called with each `presence.changed` layer message: sends a join or leave frame to
        this process's welcomed connections that asked for presence (`presence=1`) and
        subscribed to that exact topic; a user is not told of its own join."""
        if change.kind not in (JOIN, LEAVE):
            return
        tenant = self.tenants.get(change.tenant_id)
        if tenant is None:
            return
        recipients = [
            sub
            for sub in tenant.watchers.get(change.topic, ())
            if not sub.closed
            and not sub.opening
            and not (change.kind == JOIN and _user_of(sub) == change.user)
        ]
        if not recipients:
            return
        text = json.dumps(change.frame(), separators=(",", ":"))
        task = self.loop.create_task(self._send_presence(recipients, change.kind, text))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _send_presence(self, recipients: list[Subscriber], kind: str, text: str) -> None:
        for sub in recipients:
            if sub.closed:
                continue
            try:
                await sub.send_presence(kind, text)
            except Exception:
                self.drop(sub)

    def drop(self, sub: Subscriber, code: int = 1011, reason: str = "send failed") -> None:
        """Closes a connection that failed or fell behind, outside the loop that found it."""
        if not sub.closed:
            self.loop.create_task(self.close(sub, code, reason))

    # Delivery ------------------------------------------------------------------------------

    async def go_live(self, sub: Subscriber) -> None:
        """Ends a connection's replay: sends what arrived live meanwhile, then live events."""
        while sub.pending:
            fresh = []
            for envelope in sub.take_pending():
                epoch = envelope.epoch
                if sub.epoch is not None and epoch != sub.epoch:
                    # The hub re-started the sequence meanwhile (stragglers of an old epoch
                    # never reach `pending`): the new run counts from its own start.
                    sub.last_seq = 0
                sub.epoch = epoch
                if envelope.seq <= sub.last_seq:
                    continue
                sub.last_seq = envelope.seq
                fresh.append(envelope)
            if sub.closed:
                return
            if not fresh:
                continue
            frames = Frames(fresh)
            try:
                if not sub.write(frames):
                    await sub.send_events(frames)
            except Exception:
                self.drop(sub)
                return
            self.backend.count_delivered(sub.tenant_id, len(fresh))
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
                if tenant.inbox:
                    # Other tenants' deliveries and requests go before the next one.
                    await fairness.give_turn()
        finally:
            tenant.draining = False

    async def _deliver_in_order(
        self, tenant_id: int, tenant: TenantHub, envelopes: list[Envelope]
    ) -> None:
        assert tenant.last_seq is not None, "read when the tenant joined (see `deliver`)"
        run = _Run()
        since = time.perf_counter()
        for envelope in envelopes:
            if time.perf_counter() - since > fairness.FAIR_SLICE_SECONDS:
                # A long batch of one tenant lets the others' events through between its
                # runs: theirs wait for about one broadcast, not the whole batch.
                await fairness.give_turn()
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
                for missing in await self.fill(tenant_id, tenant.last_seq + 1, envelope.seq - 1):
                    if missing.seq > tenant.last_seq and missing.epoch == epoch:
                        tenant.last_seq = missing.seq
                        await self._add_to_run(tenant_id, tenant, run, missing)
            tenant.last_seq = envelope.seq
            await self._add_to_run(tenant_id, tenant, run, envelope)
        await self._broadcast_run(tenant_id, tenant, run)

    async def _add_to_run(
        self, tenant_id: int, tenant: TenantHub, run: _Run, envelope: Envelope
    ) -> None:
        run.append(envelope)
        run.size += len(envelope.frame)
        if len(run) >= RUN_EVENTS or run.size >= RUN_BYTES:
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

    async def fill(self, tenant_id: int, first: int, last: int) -> list[Envelope]:
        try:
            return await self.backend.buffered(tenant_id, first, last)
        except Exception:
            logger.warning("could not fill seq %d..%d of tenant %s", first, last, tenant_id)
            return []

    async def _broadcast_run(self, tenant_id: int, tenant: TenantHub, run: _Run) -> None:
        """Hands a run of events (in seq order, all past `tenant.last_seq` when they were added)
        to their matching connections, then empties `run`.

        One event goes through `_broadcast`. Several go to each connection as one write of all
        the frames it matches: a batch of 50 to 2000 connections is 2000 writes, not 100 000.
        Connections that match the same topics of the run share those bytes, built once.
        """
        run.size = 0
        if len(run) <= 1:
            if run:
                await self._broadcast(tenant_id, tenant, run.pop())
            return
        events, run[:] = list(run), []
        last_accepted = events[-1].received_at.timestamp()
        if last_accepted >= tenant.next_expiry:
            self._expire_due(tenant, events[0].received_at.timestamp())
            if last_accepted >= tenant.next_expiry:
                # A token expires between the run's first event and its last: one at a time,
                # so that its connection gets those before its expiry and none after.
                for envelope in events:
                    await self._broadcast(tenant_id, tenant, envelope)
                return
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
        shared: dict[tuple[str, ...], Frames] = {}
        encoded: dict[tuple[str, int], bytes] = {}
        delivered = 0
        for count, (sub, its_topics) in enumerate(matched.items(), 1):
            if not count % 64 and time.perf_counter() - since > fairness.FAIR_SLICE_SECONDS:
                await fairness.give_turn()  # as in `_broadcast`
                since = time.perf_counter()
            key = tuple(its_topics)
            frames = shared.get(key)
            if frames is None:
                frames = shared[key] = Frames(
                    events if len(key) == len(topics) else [e for e in events if e.topic in key],
                    encoded,
                )
            if sub.pending is not None:
                for envelope in frames.envelopes:
                    if not sub.hold(envelope):
                        self.drop(sub, 4008, "slow consumer: reconnect with your last id")
                        break
                continue
            if sub.closed:
                continue
            if frames.envelopes[0].seq <= sub.last_seq:
                # It joined after some of these were counted delivered: not them again.
                newer = [e for e in frames.envelopes if e.seq > sub.last_seq]
                if not newer:
                    continue
                frames = Frames(newer, encoded)
            sub.last_seq = frames.envelopes[-1].seq
            try:
                if not sub.write(frames):
                    await sub.send_events(frames)
                delivered += len(frames.envelopes)
            except Exception:
                # One broken connection must not stop the broadcast to the others.
                logger.warning("dropping connection %s after a failed send", sub.connection_id)
                self.drop(sub)
        self.backend.count_delivered(tenant_id, delivered)
        metrics.BROADCAST_SECONDS.observe(time.perf_counter() - started)

    async def _broadcast(self, tenant_id: int, tenant: TenantHub, envelope: Envelope) -> None:
        started = time.perf_counter()
        if tenant.next_expiry <= envelope.received_at.timestamp():
            self._expire_due(tenant, envelope.received_at.timestamp())
        recipients = tenant.recipients(envelope.topic)
        if not recipients:
            return
        frames = Frames([envelope])
        ws_bytes = sse_bytes = None
        delivered = 0
        since = started
        for count, sub in enumerate(recipients, 1):
            if not count % 64 and time.perf_counter() - since > fairness.FAIR_SLICE_SECONDS:
                # A broadcast to thousands is cut into turns too: what other tenants need
                # from the loop waits for one slice of it, not all of it. The tenant's next
                # broadcast still starts after this one ends (its delivery lock).
                await fairness.give_turn()
                since = time.perf_counter()
            if sub.pending is not None:
                if not sub.hold(envelope):
                    self.drop(sub, 4008, "slow consumer: reconnect with your last id")
                continue
            if sub.closed or envelope.seq <= sub.last_seq:
                continue
            sub.last_seq = envelope.seq
            try:
                # Straight to its socket, no await, no ASGI: `Subscriber.write` inlined, as
                # this line runs once per connection per event (a third of the hub's own cost
                # per delivery, measured at 1000 connections).
                if sub.write_frame is not None:
                    if sub.transport == "websocket":
                        if ws_bytes is None:
                            ws_bytes = frames.websocket()
                        wire = ws_bytes
                    else:
                        if sse_bytes is None:
                            sse_bytes = frames.sse_chunk()
                        wire = sse_bytes
                    if sub.write_frame(wire):
                        delivered += 1
                        continue
            except Exception:
                logger.warning("dropping connection %s after a failed write", sub.connection_id)
                self.drop(sub)
                continue
            try:
                await sub.send_events(frames)
                delivered += 1
            except Exception:
                # One broken connection must not stop the broadcast to the others.
                logger.warning("dropping connection %s after a failed send", sub.connection_id)
                self.drop(sub)
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
            try:
                published = published_envelopes(message)
                if published is not None:
                    self._enqueue(*published)
                    continue
                revoked = revoked_token(message)
                if revoked is not None:
                    self.token_revoked(*revoked)
                    continue
                change = presence_change(message)
                if change is not None:
                    self.presence_changed(change)
            except Exception:
                logger.exception("hub failed to take a message")


def _user_of(sub: Subscriber) -> str | None:
    return sub.token.user if sub.token is not None else None


__all__ = ["ConnectionLimitReached", "Hub", "Subscriber", "TenantHub"]
