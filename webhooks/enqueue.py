"""Provides the making of deliveries: from a batch of events inside the transaction that logs
them, and from presence notices; so that whatever the log holds gets its webhooks even if every
process dies before sending."""

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from django.utils import timezone

from streams.envelope import Envelope
from streams.topics import patterns_matcher
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.notices import WebhookNotice


@dataclass(frozen=True, slots=True)
class _Target:
    endpoint_id: int
    kinds: frozenset[str]
    matches: Callable[[str], bool]


def _targets(tenant_ids: Iterable[int]) -> dict[int, list[_Target]]:
    """The active endpoints of these tenants: one query for a whole batch, none per event."""
    targets: dict[int, list[_Target]] = defaultdict(list)
    rows = WebhookEndpoint.objects.filter(tenant_id__in=set(tenant_ids), active=True).values_list(
        "id", "tenant_id", "topics", "kinds"
    )
    for endpoint_id, tenant_id, topics, kinds in rows:
        targets[tenant_id].append(_Target(endpoint_id, frozenset(kinds), patterns_matcher(topics)))
    return targets


def deliveries_for_events(*, envelopes: Sequence[Envelope]) -> int:
    """Creates a delivery of each event for each endpoint of its tenant whose topics match; one
    already made (a retried batch) is not made again. Called inside the log's transaction."""
    targets = _targets(e.tenant_id for e in envelopes)
    if not targets:
        return 0
    now = timezone.now()
    rows = [
        WebhookDelivery(
            endpoint_id=t.endpoint_id,
            webhook_id=e.id,
            type="event",
            body=e.frame,
            next_attempt_at=now,
        )
        for e in envelopes
        for t in targets.get(e.tenant_id, ())
        if "event" in t.kinds and t.matches(e.topic)
    ]
    WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    return len(rows)


def deliveries_for_notices(*, notices: Sequence[WebhookNotice]) -> int:
    """Creates a delivery of each presence or occupancy notice for the endpoints that take its
    kind and topic; a notice written twice is delivered once."""
    targets = _targets(n.tenant_id for n in notices)
    if not targets:
        return 0
    now = timezone.now()
    rows = [
        WebhookDelivery(
            endpoint_id=t.endpoint_id,
            webhook_id=n.msg_id,
            type=n.type,
            body=n.body(),
            next_attempt_at=now,
        )
        for n in notices
        for t in targets.get(n.tenant_id, ())
        if n.kind in t.kinds and t.matches(n.topic)
    ]
    WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    return len(rows)
