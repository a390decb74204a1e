"""Provides the Origin check in front of the subscriber transports.

WebSocket: a handshake from an origin not allowed is refused (403); one without Origin is a
non-browser client, which may use a key or a token but never the session cookie. SSE: a request
with no Origin is same-origin (browsers omit it there) and may use the session, unless its
Sec-Fetch-Site says it came from another site; one from an origin not allowed may not.
"""

import logging
from urllib.parse import urlsplit

from asgiref.sync import markcoroutinefunction
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
    """ASGI middleware; sets `session_allowed` in the scope for the consumer.

    Its call returns the inner application's coroutine instead of awaiting it: an awaiting
    frame, and the scope it copied from, would live as long as the connection (see
    eventhub.sessions).
    """

    def __init__(self, application) -> None:
        self.application = application

    @markcoroutinefunction
    def __call__(self, scope, receive, send):
        raw = next((v for k, v in scope.get("headers", []) if k == b"origin"), None)
        origin = raw.decode("latin-1") if raw is not None else None
        allowed = origin is not None and origin_allowed(origin)
        if scope["type"] == "websocket":
            if origin is not None and not allowed:
                logger.warning("websocket refused: origin %r is not allowed", origin)
                return WebsocketDenier()(scope, receive, send)
            session_allowed = allowed
        elif origin is None:
            # Browsers omit Origin on a same-origin GET, but also on some cross-site ones
            # (no-cors); where they send Sec-Fetch-Site, it tells the two apart.
            fetch_site = next(
                (v for k, v in scope.get("headers", []) if k == b"sec-fetch-site"), None
            )
            session_allowed = fetch_site in (None, b"same-origin", b"none")
        else:
            session_allowed = allowed
        return self.application(dict(scope, session_allowed=session_allowed), receive, send)
