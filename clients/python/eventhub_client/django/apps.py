"""Provides the Django app config of the Eventhub outbox."""

from django.apps import AppConfig


class EventhubOutboxConfig(AppConfig):
    name = "eventhub_client.django"
    label = "eventhub_outbox"
    verbose_name = "Eventhub outbox"
    default_auto_field = "django.db.models.BigAutoField"
