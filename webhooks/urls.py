"""Provides the URLs of the webhooks' REST API."""

from django.urls import path

from webhooks import apis

urlpatterns = [
    path("webhooks", apis.WebhooksApi.as_view(), name="webhooks"),
    path("webhooks/<int:endpoint_id>", apis.WebhookDeleteApi.as_view(), name="webhook"),
    path(
        "webhooks/<int:endpoint_id>/deliveries",
        apis.WebhookDeliveriesApi.as_view(),
        name="webhook-deliveries",
    ),
]
