"""Provides the reads of the streams app: the event log and live stats."""

from collections.abc import Iterator

from asgiref.sync import async_to_sync
from django.db.models import Count, F, Max, QuerySet, RowRange, Sum, Value, Window
from django.db.models.functions import Coalesce, Length, RowNumber
from django.utils import timezone

from streams import runtime
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
    tenant = {
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


def event_history(
    *, tenant_id: int, pattern: str | None, after_seq: int, limit: int
) -> QuerySet[Event]:
    """The tenant's persisted events after `after_seq`, oldest first, optionally by topic."""
    events = Event.objects.filter(tenant_id=tenant_id, seq__gt=after_seq)
    if pattern and pattern != "*":
        if pattern.endswith("*"):
            # A range, not LIKE: SQLite's LIKE ignores case, and topics are case-sensitive.
            prefix = pattern[:-1]
            events = events.filter(topic__gte=prefix, topic__lt=prefix + "\x7f")
        else:
            events = events.filter(topic=pattern)
    return events.order_by("seq")[:limit]


async def atenant_stats(*, tenant_id: int) -> dict:
    """Live numbers of one tenant, over every process of the hub."""
    hub = runtime.get_hub()
    local = hub.count(tenant_id)
    backend = runtime.get_backend()
    return {"connections": await backend.connections(tenant_id, local)} | await backend.stats(
        tenant_id
    )


def tenant_stats(*, tenant_id: int) -> dict:
    return async_to_sync(atenant_stats)(tenant_id=tenant_id)
