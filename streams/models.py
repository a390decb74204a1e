"""Provides the persisted event log."""

from django.db import models

from tenants.models import Tenant


class Event(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    event_id = models.CharField(max_length=40)
    topic = models.CharField(max_length=200)
    type = models.CharField(max_length=100)
    # SQL NULL stands for JSON null: both read back as None, which is what the API shows.
    data = models.JSONField(null=True)
    received_at = models.DateTimeField()
    persisted_at = models.DateTimeField()

    class Meta:
        ordering = ["tenant", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "seq"], name="event_tenant_seq_unique"),
        ]
        indexes = [
            models.Index(fields=["tenant", "topic", "seq"], name="event_tenant_topic_seq"),
            models.Index(fields=["received_at"], name="event_received_at"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.seq} {self.topic}"


class IdempotentResponse(models.Model):
    """The first response to a publish sent with an Idempotency-Key, kept so that a retry after
    a restart, or after the key left the process's memory, gets it again. Written by the
    embedded engine only, after the events it names (with REDIS_URL the keys live in Redis)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    slot = models.CharField(max_length=64)  # sha256 of the path and the key, never the key
    fingerprint = models.CharField(max_length=64)  # sha256 of the request body
    response = models.TextField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "slot"], name="idempotent_tenant_slot"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.slot[:12]}"


class RevokedToken(models.Model):
    """A subscriber token revoked before its expiry (`DELETE /api/v1/tokens/{id}`). Kept only
    while the token could still be valid: tokens live at most a day (`TOKEN_MAX_TTL`), so rows
    older than that are deleted as new ones are written."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    token_id = models.CharField(max_length=64, unique=True)
    revoked_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.token_id}"
