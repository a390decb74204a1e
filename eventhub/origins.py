"""Provides the WebSocket Origin check: a browser handshake from an origin not allowed is
refused (403); a handshake without Origin is a non-browser client and passes."""

import logging
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import validate_host

logger = logging.getLogger(__name__)


def origin_allowed(origin: str) -> bool:
    explicit = settings.EVENTHUB_ALLOWED_ORIGINS
    if explicit:
        return "*" in explicit or origin.rstrip("/") in {o.rstrip("/") for o in explicit}
    host = urlsplit(origin).hostname
    if not host:
        return False
    if ":" in host:
        host = f"[{host}]"
    return validate_host(host, settings.ALLOWED_HOSTS)


class OriginGuard:
    """ASGI middleware in front of the WebSocket routes."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        origin = next((v for k, v in scope.get("headers", []) if k == b"origin"), None)
        if origin is not None:
            text = origin.decode("latin-1")
            if not origin_allowed(text):
                logger.warning("websocket refused: origin %r is not allowed", text)
                return await WebsocketDenier()(scope, receive, send)
        return await self.application(dict(scope, browser_origin=origin is not None), receive, send)
