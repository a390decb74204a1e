"""Provides the webhooks' reads: a tenant's endpoints and an endpoint's deliveries."""

from django.db.models import QuerySet

from webhooks.models import WebhookDelivery, WebhookEndpoint

DELIVERIES_LISTED = 100


def webhook_endpoints(*, tenant_id: int) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(tenant_id=tenant_id).order_by("id")


def webhook_endpoint_get(*, tenant_id: int, endpoint_id: int) -> WebhookEndpoint | None:
    """The tenant's endpoint with this id; None for an unknown one or another tenant's."""
    return WebhookEndpoint.objects.filter(tenant_id=tenant_id, pk=endpoint_id).first()


def webhook_deliveries(*, endpoint: WebhookEndpoint) -> list[WebhookDelivery]:
    """The endpoint's latest deliveries, newest first."""
    return list(
        WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-id")[:DELIVERIES_LISTED]
    )
