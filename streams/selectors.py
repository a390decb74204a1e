"""Provides the reads of the streams app: the event log and live stats."""

from asgiref.sync import async_to_sync
from django.db.models import Max, QuerySet
from django.utils import timezone

from streams import runtime
from streams.models import Event, IdempotentResponse


def event_log_last_seq(*, tenant_id: int) -> int:
    """Highest seq in the tenant's persisted log (0 when empty); seeds the sequencer."""
    return Event.objects.filter(tenant_id=tenant_id).aggregate(m=Max("seq"))["m"] or 0


def idempotent_responses_live() -> list[tuple[int, str, str, str, float]]:
    """Every unexpired idempotent response as (tenant, slot, fingerprint, response, seconds
    left); read once by the embedded engine when it starts."""
    now = timezone.now()
    rows = IdempotentResponse.objects.filter(expires_at__gt=now).values_list(
        "tenant_id", "slot", "fingerprint", "response", "expires_at"
    )
    return [(t, slot, fp, resp, (exp - now).total_seconds()) for t, slot, fp, resp, exp in rows]


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
