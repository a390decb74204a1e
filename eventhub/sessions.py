"""Provides the session and user of a subscriber request, looked up only when it has a cookie."""

from asgiref.sync import markcoroutinefunction
from channels.auth import AuthMiddlewareStack
from django.contrib.auth.models import AnonymousUser


class SessionWhenCookie:
    """ASGI middleware: Channels' AuthMiddlewareStack for a request that carries a cookie; an
    anonymous user and no session for one that does not.

    The stack resolves the user through a database thread hop on every connection, cookie or
    not; services and token-holding browsers, which subscribe without a session, skip it (a
    reconnecting crowd of them would otherwise queue on that thread).
    """

    def __init__(self, application) -> None:
        self.application = application
        self.with_session = AuthMiddlewareStack(application)

    @markcoroutinefunction
    def __call__(self, scope, receive, send):
        # Returns the inner coroutine rather than awaiting it: a middleware that awaits keeps
        # its frame and the scope it was given for the whole connection (a WebSocket's or SSE
        # stream's life), about 0.5 KB each (tracemalloc, bench/connections.py).
        if any(name == b"cookie" for name, _ in scope.get("headers", ())):
            return self.with_session(scope, receive, send)
        scope = dict(scope, cookies={}, session=None, user=AnonymousUser())
        return self.application(scope, receive, send)
