"""Provides OutboxEvent: an event to publish, stored in the caller's transaction."""

import uuid
from typing import ClassVar

from django.db import models


class OutboxEvent(models.Model):
    """One event waiting to reach the hub (or sent: `sent_at` set). Its `id` is the
    Idempotency-Key of every attempt, so a resend after a crash is harmless."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    topic = models.CharField(max_length=200)
    type = models.CharField(max_length=200, blank=True, default="")  # "": the hub's default
    data = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # A sender holds a row until then; a crashed sender's rows are taken once it has passed.
    claimed_until = models.DateTimeField(null=True, blank=True)
    claimed_by = models.UUIDField(null=True, blank=True)  # the claim of one pass of a sender
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    # Refused by the hub in a way no resend changes (400, 413, …): see last_error.
    failed_at = models.DateTimeField(null=True, blank=True)
    event_id = models.CharField(max_length=100, blank=True, default="")

    objects: ClassVar["models.Manager[OutboxEvent]"] = models.Manager()

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["created_at"],
                name="eventhub_outbox_unsent",
                condition=models.Q(sent_at__isnull=True, failed_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.topic} ({'sent' if self.sent_at else 'pending'})"

    @property
    def idempotency_key(self) -> str:
        return f"outbox-{self.id}"
