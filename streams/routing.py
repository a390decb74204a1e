"""Provides the ASGI routes of the subscriber transports."""

from channels.auth import AuthMiddlewareStack
from django.urls import path, re_path

from eventhub.origins import OriginGuard
from streams.consumers.not_found import NotFoundWebsocketConsumer
from streams.consumers.sse import EventsSseConsumer
from streams.consumers.websocket import EventsWebsocketConsumer

websocket_urlpatterns = [
    path("ws/v1/events", EventsWebsocketConsumer.as_asgi()),
    re_path(r"", NotFoundWebsocketConsumer.as_asgi()),  # last: every other path
]
# The WebSocket routes get the same middleware from eventhub.asgi, around their router.
sse_urlpatterns = [
    path("sse/v1/events", OriginGuard(AuthMiddlewareStack(EventsSseConsumer.as_asgi())))
]
