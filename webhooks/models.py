"""Provides the WebhookEndpoint, WebhookDelivery and WebhookAttempt models."""

from django.db import models

from tenants.models import Tenant

KINDS = ("event", "presence", "occupancy")


class WebhookEndpoint(models.Model):
    """A URL of a tenant that gets POSTs of the events of its topics and the presence kinds."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    topics = models.JSONField(default=list, help_text="Topic patterns, as a subscription's.")
    kinds = models.JSONField(default=list, help_text="Among event, presence and occupancy.")
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    # The signing secrets, encrypted under SECRET_KEY (webhooks.signing): never shown again.
    secret_sealed = models.TextField(editable=False)
    previous_secret_sealed = models.TextField(blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    # Set by the first failed delivery after a success; the endpoint is disabled when it is old.
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["tenant", "active"], name="webhook_tenant_active")]

    def __str__(self) -> str:
        return f"{self.tenant_id}: {self.url}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class WebhookDelivery(models.Model):
    """One message to one endpoint, sent until a 2xx or the end of the retry schedule."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    webhook_id = models.CharField(max_length=100)
    type = models.CharField(max_length=20)
    body = models.TextField()
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    # When the sender may take it next; while an attempt is in flight, the end of its lease.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "webhook_id"], name="webhook_delivery_once")
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due"),
        ]

    def __str__(self) -> str:
        return f"{self.webhook_id} → {self.endpoint_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One POST of a delivery and how it went."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_set"
    )
    at = models.DateTimeField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.delivery_id} at {self.at}: {self.status_code or self.error}"
