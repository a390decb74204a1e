"""Provides the log's reads: events for replay and history, the sequence the log reached, and
the idempotent responses kept. Plain ORM code, called in worker threads by the engines, replay
and the REST views."""

from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import (
    Count,
    F,
    Func,
    IntegerField,
    Max,
    Q,
    QuerySet,
    RowRange,
    Sum,
    TextField,
    Value,
    Window,
)
from django.db.models.functions import Cast, Coalesce, Length, RowNumber
from django.utils import timezone

from streams.envelope import Envelope
from streams.models import Event, IdempotentResponse


def event_log_last_seq(*, tenant_id: int) -> int:
    """Highest seq in the tenant's persisted log (0 when empty); seeds the sequencer."""
    return Event.objects.filter(tenant_id=tenant_id).aggregate(m=Max("seq"))["m"] or 0


def idempotent_responses_live(
    *, max_rows_per_tenant: int, max_bytes_per_tenant: int
) -> Iterator[tuple[int, str, str, str, float, int]]:
    """The unexpired idempotent responses, newest first, as (tenant, slot, fingerprint,
    response, seconds left, the tenant's unexpired rows in all): of each tenant its newest
    `max_rows_per_tenant`, as long as the responses before them hold under
    `max_bytes_per_tenant` characters (so a tenant with any row has its newest one here).

    Read by the embedded engine when it starts, as far as its memory allows; an iterator, so
    that what it leaves unread is never fetched.
    """
    now = timezone.now()
    tenant: dict[str, Any] = {
        "partition_by": [F("tenant_id")],
        "order_by": [F("expires_at").desc(), F("pk").desc()],
    }
    rows = (
        IdempotentResponse.objects.filter(expires_at__gt=now)
        .annotate(
            rank=Window(RowNumber(), **tenant),
            # Characters of the tenant's newer responses: the cap never hides its newest one.
            before=Coalesce(
                Window(Sum(Length("response")), frame=RowRange(start=None, end=-1), **tenant),
                Value(0),
            ),
            live=Window(Count("pk"), partition_by=[F("tenant_id")]),
        )
        .filter(rank__lte=max_rows_per_tenant, before__lt=max_bytes_per_tenant)
        .order_by("-expires_at", "-pk")
        .values_list("tenant_id", "slot", "fingerprint", "response", "expires_at", "live")
    )
    for t, slot, fp, resp, exp, live in rows.iterator(chunk_size=500):
        yield t, slot, fp, resp, (exp - now).total_seconds(), live


def idempotent_response_live(*, tenant_id: int, slot: str) -> tuple[str, str, float] | None:
    """The unexpired response kept for (tenant, slot) as (fingerprint, response, seconds left),
    or None; read by the embedded engine for a key it no longer holds in memory."""
    now = timezone.now()
    row = (
        IdempotentResponse.objects.filter(tenant_id=tenant_id, slot=slot, expires_at__gt=now)
        .values_list("fingerprint", "response", "expires_at")
        .first()
    )
    if row is None:
        return None
    fingerprint, response, expires_at = row
    return fingerprint, response, (expires_at - now).total_seconds()


# Bytes of an event's JSON besides its id, topic, type and data: keys, quotes, seq and ts.
FRAME_OVERHEAD = 90


class _Octets(Func):
    """Bytes (not characters) of a text in UTF-8: PostgreSQL's jsonb text is not ASCII-only."""

    function = "OCTET_LENGTH"
    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        template = "LENGTH(CAST(%(expressions)s AS BLOB))"
        return self.as_sql(compiler, connection, template=template, **extra_context)


def _data_text() -> Cast:
    # SQL NULL stands for JSON null (see Event.data); callers read None as "null".
    return Cast("data", TextField())


def _frame_bytes():
    """About the bytes of an event's JSON as subscribers get it (the seq counted as an id)."""
    data = Coalesce(_Octets(_data_text()), Value(4))
    return data + Length("event_id") * 2 + Length("topic") + Length("type") + FRAME_OVERHEAD


def _topics_matching(patterns: Iterable[str]) -> Q | None:
    """The topics any of `patterns` matches, as a condition; None for every topic."""
    condition = Q()
    for pattern in patterns:
        if pattern == "*":
            return None
        if pattern.endswith("*"):
            # A range, not LIKE: SQLite's LIKE ignores case, and topics are case-sensitive.
            prefix = pattern[:-1]
            condition |= Q(topic__gte=prefix, topic__lt=prefix + "\x7f")
        else:
            condition |= Q(topic=pattern)
    return condition


def _log_envelopes(tenant_id: int, events: QuerySet[Event], limit: int) -> list[Envelope]:
    """Events of the log as subscribers get them, their data as the database returns its text:
    never parsed (it may differ from the published text in spaces and key order, PostgreSQL's
    jsonb, but not in meaning)."""
    rows = (
        events.order_by("seq")
        .annotate(data_text=_data_text())
        .values_list("seq", "event_id", "topic", "type", "data_text", "received_at")
    )
    return [
        Envelope.build(
            tenant_id=tenant_id,
            seq=seq,
            epoch=event_id.partition("-")[2],
            topic=topic,
            type=type_,
            data_json="null" if data_text is None else data_text,
            received_at=received_at,
        )
        for seq, event_id, topic, type_, data_text, received_at in rows[:limit]
    ]


def event_log_has(*, tenant_id: int, seq: int, event_id: str) -> bool:
    """True when the log holds the event `event_id` at `seq`; where a replay from it starts."""
    return Event.objects.filter(tenant_id=tenant_id, seq=seq, event_id=event_id).exists()


def event_log_count(*, tenant_id: int, first_seq: int, last_seq: int) -> int:
    """Events the log holds with first_seq <= seq <= last_seq."""
    return Event.objects.filter(tenant_id=tenant_id, seq__gte=first_seq, seq__lte=last_seq).count()


def event_log_span(
    *, tenant_id: int, first_seq: int, last_seq: int, patterns: Iterable[str]
) -> tuple[int, int, int]:
    """(events the log holds with first_seq <= seq <= last_seq, how many of them `patterns`
    match, about their bytes of event JSON): one aggregate query, read before a replay so that
    its size is known before anything is sent."""
    matching = _topics_matching(patterns)
    totals = Event.objects.filter(
        tenant_id=tenant_id, seq__gte=first_seq, seq__lte=last_seq
    ).aggregate(
        held=Count("pk"),
        matched=Count("pk", filter=matching),
        size=Sum(_frame_bytes(), filter=matching),
    )
    return totals["held"], totals["matched"], totals["size"] or 0


def event_log_page(
    *, tenant_id: int, first_seq: int, last_seq: int, patterns: Iterable[str], limit: int
) -> list[Envelope]:
    """The first `limit` events with first_seq <= seq <= last_seq that `patterns` match,
    oldest first: one page of a replay."""
    events = Event.objects.filter(tenant_id=tenant_id, seq__gte=first_seq, seq__lte=last_seq)
    matching = _topics_matching(patterns)
    if matching is not None:
        events = events.filter(matching)
    return _log_envelopes(tenant_id, events, limit)


def event_history(
    *, tenant_id: int, pattern: str | None, after_seq: int, limit: int, chunk: int = 100
) -> Iterator[Envelope]:
    """The tenant's persisted events after `after_seq`, oldest first, optionally by topic, at
    most `limit`; read `chunk` at a time as the caller iterates, so that a caller that stops
    early (a page full of bytes) has not read the rest."""
    events = Event.objects.filter(tenant_id=tenant_id, seq__gt=after_seq)
    matching = _topics_matching([pattern or "*"])
    if matching is not None:
        events = events.filter(matching)
    while limit > 0:
        size = min(chunk, limit)
        page = _log_envelopes(tenant_id, events.filter(seq__gt=after_seq), size)
        yield from page
        if len(page) < size:
            return
        after_seq, limit = page[-1].seq, limit - size
