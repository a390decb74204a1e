"""Provides the Tenant and ApiKey models."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
SCOPES = ("publish", "subscribe", "history")


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
