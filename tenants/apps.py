"""Provides the tenants app: who may publish and subscribe."""

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Called once Django has loaded the apps: registers the OpenAPI auth scheme and the
        system checks."""
        from tenants import checks, schema  # noqa: F401
