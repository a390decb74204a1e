"""Provides the log's writes: events in batches, idempotent responses, and the purge of old
entries. Plain ORM code, called in worker threads by the embedded writer (`log.writer`) and the
Redis stream worker (`log.worker`), and by the `purge_events` command."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.db import DataError, IntegrityError, transaction
from django.db.models import JSONField, Value
from django.db.models.functions import Cast
from django.utils import timezone

from streams.envelope import Envelope
from streams.models import Event, IdempotentResponse
from webhooks.enqueue import deliveries_for_events

logger = logging.getLogger(__name__)


def _stored_json(data_json: str) -> Cast | None:
    """The event's data for the log as the text it was published as, not parsed and encoded
    again: SQLite keeps that text (replay sends it back as it came), PostgreSQL parses it into
    jsonb itself. JSON null is stored as SQL NULL (see Event.data)."""
    if data_json == "null":
        return None
    return Cast(Value(data_json), JSONField())


def event_log_write_batch(*, envelopes: Sequence[Envelope]) -> int:
    """Writes accepted events to the log in one statement; a retried batch writes nothing twice.
    Their webhook deliveries are made in the same transaction, so a logged event has them.

    Called by the persistence consumer, in a thread of its own.
    """
    now = timezone.now()
    rows = [
        Event(
            tenant_id=e.tenant_id,
            seq=e.seq,
            event_id=e.id,
            topic=e.topic,
            type=e.type,
            data=_stored_json(e.data_json),
            received_at=e.received_at,
            persisted_at=now,
        )
        for e in envelopes
    ]
    try:
        with transaction.atomic():
            Event.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
            deliveries_for_events(envelopes=envelopes)
    except (DataError, IntegrityError):
        # One row the database refuses must not block the log forever (the writer retries a
        # failed batch): write row by row and set aside only the refused ones, loudly.
        for row, envelope in zip(rows, envelopes, strict=True):
            try:
                with transaction.atomic():
                    Event.objects.bulk_create([row], ignore_conflicts=True)
                    deliveries_for_events(envelopes=[envelope])
            except (DataError, IntegrityError):
                logger.error(
                    "event %s of tenant %s refused by the database; not logged",
                    row.event_id,
                    row.tenant_id,
                    exc_info=True,
                )
    return len(rows)


def events_purge(*, older_than_days: float) -> int:
    """Deletes log entries received more than `older_than_days` ago, and expired idempotent
    responses; returns how many events."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = Event.objects.filter(received_at__lt=cutoff).delete()
    IdempotentResponse.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted


@dataclass(frozen=True, slots=True)
class IdempotentResponseInput:
    tenant_id: int
    slot: str
    fingerprint: str
    response: str
    ttl_seconds: float


def idempotent_responses_write(*, records: Sequence[IdempotentResponseInput]) -> int:
    """Keeps first responses of idempotent publishes; the first one written for a key stays.

    Called by the embedded persistence consumer once the events they name are in the log.
    """
    now = timezone.now()
    rows = [
        IdempotentResponse(
            tenant_id=r.tenant_id,
            slot=r.slot,
            fingerprint=r.fingerprint,
            response=r.response,
            expires_at=now + timedelta(seconds=r.ttl_seconds),
        )
        for r in records
    ]

    def save(batch: list[IdempotentResponse]) -> None:
        # A key is saved only when no live record held it, so an expired row is replaced.
        with transaction.atomic():
            IdempotentResponse.objects.bulk_create(
                batch,
                update_conflicts=True,
                unique_fields=["tenant", "slot"],
                update_fields=["fingerprint", "response", "expires_at"],
                batch_size=500,
            )

    try:
        save(rows)
    except IntegrityError:
        # A tenant deleted meanwhile must not hold up the others' records (nor the log writer).
        for row in rows:
            try:
                save([row])
            except IntegrityError:
                logger.warning("idempotent response of tenant %s not kept", row.tenant_id)
    return len(rows)
