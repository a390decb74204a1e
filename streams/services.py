"""Provides the writes of the streams app: publishing events and writing the event log."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import async_to_sync
from django.db import close_old_connections
from django.utils import timezone

from streams import metrics, runtime
from streams.envelope import Envelope
from streams.groups import tenant_group
from streams.models import Event


@dataclass(frozen=True, slots=True)
class EventInput:
    topic: str
    type: str
    data_json: str  # already encoded and size-checked by the caller


def event_publish(*, tenant_id: int, events: Sequence[EventInput]) -> list[Envelope]:
    """Accepts events for a tenant: sequences them, fans them out and queues them for the log.

    Writes nothing to the database, and returns once every process has been handed the events.
    """
    sequencer = runtime.get_sequencer()
    items = [(e.topic, e.type, e.data_json) for e in events]
    # Held until the hand-off is done, so the layer and the log see events in seq order.
    with sequencer.lock:
        envelopes = sequencer.assign(tenant_id=tenant_id, items=items, received_at=timezone.now())
        async_to_sync(_hand_off)(tenant_id, envelopes)
    metrics.count_accepted(tenant_id, len(envelopes))
    return envelopes


async def _hand_off(tenant_id: int, envelopes: list[Envelope]) -> None:
    runtime.get_log_queue().put(envelopes)
    hub = runtime.get_hub()
    await hub.start()
    await hub.layer.group_send(
        tenant_group(tenant_id),
        {
            "type": "event.published",
            "tenant": tenant_id,
            "events": [e.to_wire() for e in envelopes],
        },
    )


def event_log_write_batch(*, envelopes: Sequence[Envelope]) -> int:
    """Writes accepted events to the log in one statement; a retried batch writes nothing twice.

    Called by the persistence consumer, in a thread of its own.
    """
    close_old_connections()
    now = timezone.now()
    rows = [
        Event(
            tenant_id=e.tenant_id,
            seq=e.seq,
            event_id=e.id,
            topic=e.topic,
            type=e.type,
            data=e.data,
            received_at=e.received_at,
            persisted_at=now,
        )
        for e in envelopes
    ]
    Event.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    per_tenant: dict[int, int] = {}
    for e in envelopes:
        per_tenant[e.tenant_id] = per_tenant.get(e.tenant_id, 0) + 1
    for tenant_id, n in per_tenant.items():
        metrics.count_persisted(tenant_id, n)
    return len(rows)


def events_purge(*, older_than_days: float) -> int:
    """Deletes log entries received more than `older_than_days` ago; returns how many."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = Event.objects.filter(received_at__lt=cutoff).delete()
    return deleted
