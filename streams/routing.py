"""Provides the ASGI routes of the subscriber transports."""

from django.urls import path

from streams.consumers.sse import EventsSseConsumer
from streams.consumers.websocket import EventsWebsocketConsumer

websocket_urlpatterns = [path("ws/v1/events", EventsWebsocketConsumer.as_asgi())]
sse_urlpatterns = [path("sse/v1/events", EventsSseConsumer.as_asgi())]
