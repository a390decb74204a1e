"""Provides the log's writes: events in batches, idempotent responses, and the purge of old
entries. ORM code, but for the events' insert, a statement of its own; called in worker threads
by the embedded writer (`log.writer`) and the Redis stream worker (`log.worker`), and by the
`purge_events` command."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from django.db import DataError, IntegrityError, connection, transaction
from django.db.models.constants import OnConflict
from django.utils import timezone

from streams.envelope import Envelope
from streams.models import Event, IdempotentResponse
from webhooks.enqueue import deliveries_for_events

logger = logging.getLogger(__name__)


# The log's columns, in the order of each row `event_log_write_batch` inserts.
_EVENT_FIELDS = (
    "tenant",
    "seq",
    "event_id",
    "topic",
    "type",
    "data",
    "received_at",
    "persisted_at",
)


def event_log_write_batch(*, envelopes: Sequence[Envelope]) -> int:
    """Writes accepted events to the log in one statement; a retried batch writes nothing twice.
    Their webhook deliveries are made in the same transaction, so a logged event has them.

    Called by the persistence consumer, in a thread of its own.
    """
    adapt = connection.ops.adapt_datetimefield_value
    persisted_at = adapt(timezone.now())
    rows = [
        (
            e.tenant_id,
            e.seq,
            e.id,
            e.topic,
            e.type,
            # The data as the text it was published as, not parsed and encoded again: SQLite
            # keeps that text (replay sends it back as it came), PostgreSQL parses it into
            # jsonb itself. JSON null is stored as SQL NULL (see Event.data).
            None if e.data_json == "null" else e.data_json,
            adapt(e.received_at),
            persisted_at,
        )
        for e in envelopes
    ]
    try:
        with transaction.atomic():
            _events_insert(rows)
            deliveries_for_events(envelopes=envelopes)
    except (DataError, IntegrityError):
        # One row the database refuses must not block the log forever (the writer retries a
        # failed batch): write row by row and set aside only the refused ones, loudly.
        for row, envelope in zip(rows, envelopes, strict=True):
            try:
                with transaction.atomic():
                    _events_insert([row])
                    deliveries_for_events(envelopes=[envelope])
            except (DataError, IntegrityError):
                logger.error(
                    "event %s of tenant %s refused by the database; not logged",
                    envelope.id,
                    envelope.tenant_id,
                    exc_info=True,
                )
    return len(rows)


def _events_insert(rows: list[tuple]) -> None:
    """Inserts `rows` (values of _EVENT_FIELDS, adapted for the database) into the log, as
    `bulk_create(ignore_conflicts=True)` does: a row whose (tenant, seq) is logged already is
    skipped, and as many rows go in one statement as the database's parameter limit allows.

    The statement is written here rather than by the ORM: compiling each row's values through
    the model's fields cost 60 µs of the 86 a logged event took (cProfile of 50-event batches
    on SQLite), all of it holding the GIL the event loop needs; the values are the envelope's
    own, checked when it was published.
    """
    by_name = {field.name: field for field in Event._meta.concrete_fields}
    fields = [by_name[name] for name in _EVENT_FIELDS]
    ops, quote = connection.ops, connection.ops.quote_name
    data_placeholder = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    row_sql = "(" + ", ".join(data_placeholder if f.name == "data" else "%s" for f in fields) + ")"
    head = (
        f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {quote(Event._meta.db_table)} "
        f"({', '.join(quote(cast(str, f.column)) for f in fields)}) VALUES "
    )
    tail = ops.on_conflict_suffix_sql(fields, OnConflict.IGNORE, None, None)
    per_statement = min(500, ops.bulk_batch_size(fields, rows) or 1)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(
                f"{head}{', '.join([row_sql] * len(chunk))} {tail}",
                [value for row in chunk for value in row],
            )


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
