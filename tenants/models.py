"""Provides the Tenant, ApiKey and AuditEntry models."""

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import RegexValidator
from django.db import models

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
SCOPES = ("publish", "subscribe", "history", "webhooks")


class Tenant(models.Model):
    slug = models.CharField(max_length=63, unique=True, validators=[RegexValidator(SLUG_PATTERN)])
    name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(
        default=True, help_text="A suspended tenant can neither publish nor subscribe."
    )
    max_connections = models.PositiveIntegerField(
        null=True, blank=True, help_text="Live subscriber connections allowed; empty: unlimited."
    )
    publish_rate = models.PositiveIntegerField(
        null=True, blank=True, help_text="Events per second (burst the same); empty: unlimited."
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="eventhub_tenants",
        help_text="Dashboard users who may see this tenant (staff see every tenant).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ApiKey(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=16, unique=True, help_text="Shown to identify the key.")
    hashed_secret = models.CharField(
        max_length=64, unique=True, help_text="SHA-256 of the whole key."
    )
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant.slug})"


class ActorKind(models.TextChoices):
    """Who an audit entry's change was made by (tenants.actors.Actor.kind)."""

    ADMIN = "admin", "admin user"
    COMMAND = "command", "management command"
    API_KEY = "api_key", "API key"
    ANONYMOUS = "anonymous", "anonymous request"


class AuditAction(models.TextChoices):
    API_KEY_ISSUE = "api_key.issue", "API key issued"
    API_KEY_UPDATE = "api_key.update", "API key changed"
    API_KEY_REVOKE = "api_key.revoke", "API key revoked"
    API_KEY_DELETE = "api_key.delete", "API key deleted"
    TENANT_CREATE = "tenant.create", "tenant created"
    TENANT_UPDATE = "tenant.update", "tenant changed"
    TENANT_SUSPEND = "tenant.suspend", "tenant suspended"
    TENANT_RESUME = "tenant.resume", "tenant resumed"
    TENANT_DELETE = "tenant.delete", "tenant deleted"
    TOKEN_REVOKE = "token.revoke", "token revoked"
    WEBHOOK_CREATE = "webhook.create", "webhook endpoint created"
    WEBHOOK_DELETE = "webhook.delete", "webhook endpoint deleted"
    WEBHOOK_ROTATE = "webhook.rotate", "webhook secret rotated"
    WEBHOOK_RESEND = "webhook.resend", "webhook delivery sent again"


class AuditEntry(models.Model):
    """One change to a key, a tenant or a token: who made it, what, when and from where.
    Written by tenants.services.audit_record only; the app never changes or deletes one."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor_name = models.CharField(
        max_length=200, blank=True, help_text="Username, command, or API key prefix."
    )
    actor_address = models.GenericIPAddressField(
        null=True, blank=True, help_text="The client's IP address, where there is one."
    )
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    # SET_NULL and a copy of the slug: the trail outlives a deleted tenant.
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries"
    )
    tenant_slug = models.CharField(max_length=63, blank=True)
    target = models.CharField(
        max_length=200, blank=True, help_text="What was acted on: a key prefix, a token id."
    )
    changes = models.JSONField(
        default=dict,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text='{"field": [before, after]}; before is null for what was created.',
    )

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["tenant", "-at"], name="tenants_audit_tenant_at")]
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.target or self.tenant_slug}"
