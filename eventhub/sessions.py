"""Provides the session and user of a subscriber request, looked up only when it has a cookie."""

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

    async def __call__(self, scope, receive, send):
        if any(name == b"cookie" for name, _ in scope.get("headers", ())):
            return await self.with_session(scope, receive, send)
        scope = dict(scope, cookies={}, session=None, user=AnonymousUser())
        return await self.application(scope, receive, send)
