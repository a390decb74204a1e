"""Provides the URLs of the REST API."""

from django.urls import path

from streams import apis

urlpatterns = [
    path("events", apis.EventsApi.as_view(), name="events"),
    path("events/batch", apis.EventBatchPublishApi.as_view(), name="events-batch"),
    path("tokens", apis.TokenIssueApi.as_view(), name="tokens"),
    path("tokens/<str:token_id>", apis.TokenRevokeApi.as_view(), name="token"),
    path("presence", apis.PresenceGetApi.as_view(), name="presence"),
    path("stats", apis.StatsApi.as_view(), name="stats"),
]
