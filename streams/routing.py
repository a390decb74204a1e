"""Provides the ASGI routes of the subscriber transports."""

from django.urls import path, re_path

from eventhub.origins import OriginGuard
from eventhub.sessions import SessionWhenCookie
from streams import apis
from streams.delivery.consumers.not_found import NotFoundWebsocketConsumer
from streams.delivery.consumers.sse import EventsSseConsumer
from streams.delivery.consumers.websocket import EventsWebsocketConsumer
from streams.ingest import PublishEndpoint

# The subscriber routes are wrapped in their middleware inside the router, not around it: the
# middleware returns the consumer's coroutine without awaiting it, so nothing of it (nor a scope
# it copied) outlives the routing of a connection, which can last for days.
websocket_urlpatterns = [
    path("ws/v1/events", OriginGuard(SessionWhenCookie(EventsWebsocketConsumer.as_asgi()))),
    re_path(r"", NotFoundWebsocketConsumer.as_asgi()),  # last: every other path
]
sse_urlpatterns = [
    path("sse/v1/events", OriginGuard(SessionWhenCookie(EventsSseConsumer.as_asgi())))
]


def ingest_urlpatterns(django_app) -> list:
    """The publish endpoints' fast path, ahead of Django, which answers what it does not take."""
    return [
        path(
            "api/v1/events", PublishEndpoint(batch=False, view=apis.EventsApi, fallback=django_app)
        ),
        path(
            "api/v1/events/batch",
            PublishEndpoint(batch=True, view=apis.EventBatchPublishApi, fallback=django_app),
        ),
    ]
