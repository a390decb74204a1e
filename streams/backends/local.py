"""Provides the embedded engine: one process owns every tenant's sequence, replay buffer and
log queue; the in-memory channel layer carries events to its hub."""

import asyncio
import contextlib
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from itertools import islice

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from streams import metrics
from streams.backends import HubUnavailable, LogBacklogFull, RateLimited
from streams.backends.local_idempotency import IdempotencyStore
from streams.envelope import Envelope, epoch_new
from streams.groups import tenant_group
from streams.layer_messages import published_message
from streams.log.reads import (
    event_log_last_seq,
    idempotent_response_live,
    idempotent_responses_live,
)
from streams.log.writer import LocalLogQueue
from streams.log.writes import (
    IdempotentResponseInput,
    event_log_write_batch,
    idempotent_responses_write,
)
from streams.ratelimit import TokenBuckets
from streams.tasks import background_task
from streams.topics import patterns_matcher
from tenants.services import api_keys_flush_usage
from webhooks.enqueue import deliveries_for_notices
from webhooks.notices import WebhookNotice
from webhooks.selectors import KindsWanted
from webhooks.sender import WebhookSender


def _records_write(records: list) -> int:
    """Writes the log queue's records: idempotent responses and webhook notices."""
    notices = [r for r in records if isinstance(r, WebhookNotice)]
    responses = [r for r in records if not isinstance(r, WebhookNotice)]
    if responses:
        idempotent_responses_write(records=responses)
    if notices:
        deliveries_for_notices(notices=notices)
    return len(records)


class _TenantSequence:
    __slots__ = ("buffer", "epoch", "last_seq")

    def __init__(self, last_seq: int, window: int) -> None:
        self.last_seq = last_seq
        self.epoch = epoch_new()
        self.buffer: deque[Envelope] = deque(maxlen=window)


class LocalBackend:
    """Lives on the serving event loop; every method runs there."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.layer = get_channel_layer()
        self._idempotency = IdempotencyStore(
            live_rows=idempotent_responses_live, live_row=idempotent_response_live
        )
        self.webhook_sender = WebhookSender()
        self._webhook_task: asyncio.Task | None = None
        self._kinds_wanted = KindsWanted()
        self.log_queue = LocalLogQueue(
            write_batch=lambda batch: event_log_write_batch(envelopes=batch),
            flush_usage=api_keys_flush_usage,
            write_records=_records_write,
            records_written=lambda records: self._idempotency.written(
                [r for r in records if not isinstance(r, WebhookNotice)]
            ),
            committed=self.webhook_sender.wake,
        )
        self._idempotency_record = IdempotentResponseInput
        self._seed = database_sync_to_async(
            lambda tenant_id: event_log_last_seq(tenant_id=tenant_id)
        )
        self._tenants: dict[int, _TenantSequence] = {}
        self._lock = asyncio.Lock()
        self._buckets = TokenBuckets()
        self.closing = False

    async def _sequence(self, tenant_id: int) -> _TenantSequence:
        state = self._tenants.get(tenant_id)
        if state is None:
            # The one database read of the publish path: once per tenant per process.
            last = await self._seed(tenant_id)
            state = self._tenants.setdefault(
                tenant_id, _TenantSequence(last, settings.EVENTHUB_REPLAY_WINDOW)
            )
        return state

    async def publish(
        self,
        tenant_id: int,
        items: Sequence[tuple[str, str, str]],
        received_at: datetime,
        rate: int | None = None,
    ) -> list[Envelope]:
        if self.closing:
            # Everything accepted must reach the log before the process exits.
            raise HubUnavailable("the server is shutting down")
        if self.log_queue.backlog + len(items) > settings.EVENTHUB_LOG_BACKLOG_MAX:
            # The database has not taken what was accepted for a while (it is down): memory
            # stays bounded, and the publisher hears so and retries.
            raise LogBacklogFull("the event log's backlog is full")
        if rate:
            wait = self._buckets.take(tenant_id=tenant_id, rate=rate, count=len(items))
            if wait:
                raise RateLimited(wait)
        # One lock around sequencing and hand-off: the layer and the log see seq order.
        async with self._lock:
            state = await self._sequence(tenant_id)
            envelopes = []
            for topic, type_, data_json in items:
                state.last_seq += 1
                envelopes.append(
                    Envelope.build(
                        tenant_id=tenant_id,
                        seq=state.last_seq,
                        epoch=state.epoch,
                        topic=topic,
                        type=type_,
                        data_json=data_json,
                        received_at=received_at,
                    )
                )
            state.buffer.extend(envelopes)
            self.log_queue.put(envelopes)
            await self.layer.group_send(
                tenant_group(tenant_id), published_message(tenant_id, envelopes)
            )
        metrics.count_accepted(tenant_id, len(envelopes))
        return envelopes

    async def rate_wait(self, *, tenant_id: int, rate: int) -> float:
        """Seconds until the tenant's rate bucket holds an event (0: now); takes nothing."""
        return self._buckets.wait(tenant_id=tenant_id, rate=rate)

    async def buffered(
        self, tenant_id: int, from_seq: int, to_seq: int | None = None
    ) -> list[Envelope]:
        state = self._tenants.get(tenant_id)
        if state is None or not state.buffer:
            return []
        first = state.buffer[0].seq
        start = max(0, from_seq - first)
        stop = len(state.buffer) if to_seq is None else max(0, to_seq - first + 1)
        return list(state.buffer)[start:stop]

    def _held(self, tenant_id: int, from_seq: int, to_seq: int) -> Iterator[Envelope]:
        state = self._tenants.get(tenant_id)
        if state is None or not state.buffer:
            return iter(())
        first = state.buffer[0].seq
        return islice(state.buffer, max(0, from_seq - first), max(0, to_seq - first + 1))

    async def buffered_size(
        self, tenant_id: int, from_seq: int, to_seq: int, patterns: Sequence[str]
    ) -> tuple[int, int, int]:
        """(first seq held with from_seq <= seq <= to_seq, or 0; how many are held; the bytes of
        event JSON of those `patterns` match): what a replay from the buffer would send."""
        first = held = size = 0
        matches = patterns_matcher(patterns)
        for envelope in self._held(tenant_id, from_seq, to_seq):
            first = first or envelope.seq
            held += 1
            if matches(envelope.topic):
                size += len(envelope.frame)
        return first, held, size

    async def buffered_page(
        self, tenant_id: int, from_seq: int, to_seq: int, max_events: int, max_bytes: int
    ) -> list[Envelope]:
        """The buffer's events from `from_seq` on (up to `to_seq`), oldest first, as many as
        `max_events` and `max_bytes` of event JSON allow (at least one): a page of a replay."""
        page: list[Envelope] = []
        size = 0
        for envelope in self._held(tenant_id, from_seq, to_seq):
            size += len(envelope.frame)
            if page and (size > max_bytes or len(page) == max_events):
                break
            page.append(envelope)
        return page

    async def current_seq(self, tenant_id: int) -> int:
        return (await self._sequence(tenant_id)).last_seq

    async def current_epoch(self, tenant_id: int) -> str | None:
        return (await self._sequence(tenant_id)).epoch

    async def changed_seqs(
        self, tenant_ids: Collection[int], since: object
    ) -> tuple[object, dict[int, int]]:
        # In this process's memory: reading every sequence costs what finding the moved ones
        # would.
        return None, {t: self._tenants[t].last_seq for t in tenant_ids if t in self._tenants}

    async def log_backlog(self) -> tuple[int, float]:
        backlog = [self.log_queue.pending(t) for t in list(metrics.tenant_counters)]
        return sum(n for n, _ in backlog), max((age for _, age in backlog), default=0.0)

    async def stats(self, tenant_id: int) -> dict:
        counters = metrics.tenant_counters[tenant_id]
        pending, lag = self.log_queue.pending(tenant_id)
        return {
            "events": {
                "accepted": counters.accepted,
                "delivered": counters.delivered,
                "persisted": counters.persisted,
            },
            "persistence": {"pending": pending, "lag_seconds": round(lag, 3)},
        }

    def start(self) -> None:
        self.log_queue.start()
        if settings.EVENTHUB_WEBHOOK_SENDER and self._webhook_task is None:
            self._webhook_task = background_task(
                self.webhook_sender.run(), name="eventhub-webhook-sender"
            )

    async def webhook_notice(self, notice: WebhookNotice) -> None:
        """Queues a presence or occupancy notice for its webhooks, after the events queued so
        far; called on the loop by the tracker's process, never blocks."""
        if await self._kinds_wanted.wants(notice.tenant_id, notice.kind):
            self.log_queue.put_record(notice)

    def count_delivered(self, tenant_id: int, n: int) -> None:
        metrics.count_delivered(tenant_id, n)

    async def connection_acquire(
        self, tenant_id: int, transport: str, limit: int, local: dict[str, int]
    ) -> bool:
        """Whether the tenant has room for one more connection; called by the hub before it
        admits a connection of a limited tenant.

        One process holds every connection: its counts (`local`) are the whole truth, and
        this returns without yielding to the loop, so the hub adds the connection before any
        other connect is checked.
        """
        return sum(local.values()) < limit

    async def connection_change(self, tenant_id: int, transport: str, delta: int) -> None:
        """Nothing to share: the hub's own counts are the whole truth in one process."""

    async def connections(self, tenant_id: int, local: dict[str, int]) -> dict[str, int]:
        return local

    async def idempotency_claim(
        self, tenant_id: int, slot: str, fingerprint: str, ttl: float
    ) -> tuple[str, str | None] | None:
        """Claims a key for this request (None), or returns (fingerprint, response) of the
        request that holds it (response None while that one is running); see
        `IdempotencyStore.claim`."""
        return await self._idempotency.claim(tenant_id, slot, fingerprint, ttl)

    async def idempotency_save(
        self, tenant_id: int, slot: str, fingerprint: str, response: str, ttl: float
    ) -> None:
        self._idempotency.save(tenant_id, slot, fingerprint, response, ttl)
        # Logged behind the events it names, so a restart keeps the answer and the log agrees.
        self.log_queue.put_record(
            self._idempotency_record(tenant_id, slot, fingerprint, response, ttl)
        )

    async def idempotency_release(self, tenant_id: int, slot: str) -> None:
        self._idempotency.release(tenant_id, slot)

    async def close(self) -> None:
        """Refuses further publishes and drains the log queue; runs at shutdown."""
        self.closing = True
        await self.log_queue.stop()
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
