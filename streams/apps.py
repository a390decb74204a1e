"""Provides the streams app: publishing, fan-out, subscriptions and the event log."""

from django.apps import AppConfig


class StreamsConfig(AppConfig):
    name = "streams"
    default_auto_field = "django.db.models.BigAutoField"
