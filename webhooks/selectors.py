"""Provides the webhooks' reads: a tenant's endpoints and an endpoint's deliveries."""

import time

from channels.db import database_sync_to_async
from django.db.models import Count, Q, QuerySet

from webhooks.models import WebhookDelivery, WebhookEndpoint

DELIVERIES_LISTED = 100


def webhook_endpoints(*, tenant_id: int) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(tenant_id=tenant_id).order_by("id")


def webhook_endpoints_summary(*, tenant_id: int) -> list[dict]:
    """The tenant's endpoints as its dashboard shows them: where, what, whether they are
    active (and why not), and how many deliveries wait or are dead."""
    endpoints = webhook_endpoints(tenant_id=tenant_id).annotate(
        pending=Count("deliveries", filter=Q(deliveries__status="pending")),
        dead=Count("deliveries", filter=Q(deliveries__status="dead")),
    )
    return [
        {
            "id": e.pk,
            "url": e.url,
            "topics": e.topics,
            "kinds": e.kinds,
            "active": e.active,
            "disabled_reason": e.disabled_reason,
            "pending": e.pending,
            "dead": e.dead,
        }
        for e in endpoints
    ]


def webhook_endpoint_get(*, tenant_id: int, endpoint_id: int) -> WebhookEndpoint | None:
    """The tenant's endpoint with this id; None for an unknown one or another tenant's."""
    return WebhookEndpoint.objects.filter(tenant_id=tenant_id, pk=endpoint_id).first()


def webhook_deliveries(*, endpoint: WebhookEndpoint) -> list[WebhookDelivery]:
    """The endpoint's latest deliveries, newest first."""
    return list(
        WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-id")[:DELIVERIES_LISTED]
    )


def webhook_kinds_wanted(*, tenant_id: int) -> set[str]:
    """The kinds the tenant's active endpoints take (event, presence, occupancy)."""
    wanted: set[str] = set()
    for kinds in WebhookEndpoint.objects.filter(tenant_id=tenant_id, active=True).values_list(
        "kinds", flat=True
    ):
        wanted.update(kinds)
    return wanted


# How long a process trusts what it read of a tenant's endpoints' kinds: a presence endpoint
# registered gets the changes made from then on within this long.
KINDS_CACHE_SECONDS = 5.0


class KindsWanted:
    """Whether a tenant has endpoints for presence or occupancy, read at most every few seconds
    per tenant; lives on one event loop (an engine's), so that changes of tenants without such
    endpoints cost nothing further."""

    def __init__(self) -> None:
        self._read = database_sync_to_async(
            lambda tenant_id: webhook_kinds_wanted(tenant_id=tenant_id), thread_sensitive=False
        )
        self._cache: dict[int, tuple[float, set[str]]] = {}

    async def wants(self, tenant_id: int, kind: str) -> bool:
        now = time.monotonic()
        cached = self._cache.get(tenant_id)
        if cached is None or cached[0] < now:
            try:
                kinds = await self._read(tenant_id)
            except Exception:
                # The database is down: a notice too many costs less than one missed.
                return True
            cached = self._cache[tenant_id] = (now + KINDS_CACHE_SECONDS, kinds)
        return kind in cached[1]
