"""Provides the ingest path: `POST /api/v1/events` and `/batch` answered in the event loop.

Through Django's ASGI handler a publish crossed threads four times (the request's own thread for
the view and each sync middleware, back to the loop for the hub, back again) and ran eight
middleware that have nothing to say about a key-authenticated JSON request; that was about half
of its cost (bench/publish.py). Here the same operation (`publishing.publish_request`, also
behind the DRF views), the same authentication, permission, parser and exception handler run
without a thread hop, and the headers Django's middleware would add are added.

Only the common case takes this path: a POST with a Bearer key, a JSON body and an allowed host
on a deployment that leaves the HTTPS redirect to its proxy. Anything else (no key, another
content type, a host Django must refuse) goes to Django, whose answer it is.
"""

import asyncio
import logging
import time

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http.request import split_domain_port, validate_host
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.renderers import JSONRenderer

from eventhub.exceptions import api_exception_handler
from streams import metrics
from streams.event_input import body_limit
from streams.publishing import publish_request
from tenants.authentication import AUTHENTICATE_HEADER, abearer_principal
from tenants.permissions import principal_permit

logger = logging.getLogger(__name__)

_renderer = JSONRenderer()


class PublishEndpoint:
    """ASGI application of one publish endpoint; `fallback` (Django) answers what it does not
    take."""

    def __init__(self, *, batch: bool, view, fallback) -> None:
        self.batch = batch
        self.fallback = fallback
        # The view's Allow header, as DRF computes it once Django's View.setup has run.
        instance = view()
        if hasattr(instance, "get") and not hasattr(instance, "head"):
            instance.head = instance.get
        self.allow = ", ".join(instance.allowed_methods).encode()

    async def __call__(self, scope, receive, send) -> None:
        headers = dict(scope["headers"])  # daphne lower-cases header names
        if len(headers) != len(scope["headers"]) or not _eligible(scope, headers):
            # A repeated header is Django's to combine or refuse, as it would anyway.
            await self.fallback(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            raw_body = await _read_body(headers, receive, body_limit(batch=self.batch))
        except _Disconnected:
            return
        try:
            status, body = 202, await self._publish(scope, headers, raw_body)
            extra = []
        except Exception as exc:  # every failure becomes an answer
            status, body, extra = _error(exc)
        await self._respond(scope, send, status, body, extra)
        metrics.count_publish_request(status, time.perf_counter() - started)

    async def _publish(self, scope, headers: dict, raw_body: bytes | None) -> dict:
        principal = await abearer_principal(headers[b"authorization"])
        principal_permit(principal, "publish")
        if raw_body is None:
            raise RequestDataTooBig
        key = headers.get(b"idempotency-key")
        publish = asyncio.ensure_future(
            publish_request(
                tenant_id=principal.tenant_id,
                rate=principal.publish_rate,
                raw_body=raw_body,
                path=scope["path"],
                idempotency_key=key.decode("latin-1") if key is not None else None,
                batch=self.batch,
            )
        )
        # Once begun, a publish runs to its end, as it does in Django's thread: daphne cancels
        # a request whose client left, and a publish cut between sequencing and its
        # Idempotency-Key record would be published again by the client's retry.
        publish.add_done_callback(_consume)
        try:
            return await asyncio.shield(publish)
        finally:
            # A failed publish's traceback holds this frame, and this frame the task holding
            # the exception: a cycle only the collector frees, that would keep the body (and
            # its text) in memory until then.
            del publish

    async def _respond(self, scope, send, status: int, body, extra: list) -> None:
        content = _renderer.render(body)
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            (b"allow", self.allow),
            *extra,
            *_middleware_headers(scope),
        ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": content})


def _consume(task: asyncio.Future) -> None:
    """Marks a publish's outcome as seen: its request, when still there, has answered it; when
    cancelled meanwhile, nobody is left to (and asyncio would log it as never retrieved)."""
    if not task.cancelled():
        task.exception()


class _Disconnected(Exception):
    """The client went away before its body arrived."""


def _eligible(scope, headers: dict) -> bool:
    if scope["method"] != "POST" or settings.SECURE_SSL_REDIRECT:
        return False
    if b"format" in scope.get("query_string", b""):
        return False  # DRF's ?format= override: Django's to answer
    if not _accepts_json(headers.get(b"accept")):
        return False  # DRF refuses it (406) before anything else
    authorization = headers.get(b"authorization", b"")
    if authorization[:7].lower() != b"bearer ":
        return False
    media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    if media_type != b"application/json":
        return False
    if settings.USE_X_FORWARDED_HOST and b"x-forwarded-host" in headers:
        return False
    host = headers.get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


def _accepts_json(accept: bytes | None) -> bool:
    """True when DRF would answer this Accept header in plain JSON, as the ingest path does."""
    if accept is None:
        return True
    if b"indent" in accept:
        return False  # DRF's JSONRenderer would indent
    for media_range in accept.split(b","):
        media_type = media_range.split(b";", 1)[0].strip().lower()
        if media_type in (b"*/*", b"application/*", b"application/json"):
            return True
    return False


async def _read_body(headers: dict, receive, limit: int | None) -> bytes | None:
    """The whole body, or None when it is larger than `limit` (413): by its declared length,
    keeping none of it, or once what arrived passes the limit.

    A refused body is still taken off the queue: daphne queues all of it before the
    application runs, and what is left there stays in memory until daphne's cleanup a second
    later (measured: 3 clients posting 4 MiB bodies grew the process by 250 MB).
    """
    try:
        declared = int(headers.get(b"content-length", b"0"))
    except ValueError:
        declared = 0
    chunks, size, too_large = [], 0, limit is not None and declared > limit
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        if not too_large:
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                too_large, chunks = True, []
            else:
                chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return None if too_large else b"".join(chunks)


def _error(exc: Exception) -> tuple[int, object, list]:
    """The status, body and headers DRF's view and exception handler give for `exc`."""
    if isinstance(exc, NotAuthenticated | AuthenticationFailed):
        exc.auth_header = AUTHENTICATE_HEADER
    response = api_exception_handler(exc, {})
    if response is None:
        logger.error("publish failed", exc_info=exc)
        return 500, {"detail": "Internal server error."}, []
    extra = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.items()
        if name.lower() != "content-type"
    ]
    return response.status_code, response.data, extra


def _middleware_headers(scope) -> list[tuple[bytes, bytes]]:
    """The headers Django's SecurityMiddleware and XFrameOptionsMiddleware add to an answer."""
    headers = []
    if settings.SECURE_HSTS_SECONDS and _secure(scope):
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append((b"strict-transport-security", value.encode()))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        if not isinstance(policy, str):
            policy = ",".join(policy)
        headers.append((b"referrer-policy", policy.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(
            (b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode())
        )
    headers.append((b"x-frame-options", getattr(settings, "X_FRAME_OPTIONS", "DENY").encode()))
    return headers


def _secure(scope) -> bool:
    """As Django's `request.is_secure()`: the proxy's header when configured and sent, else the
    connection's own scheme."""
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name, value = proxy
        header = name.removeprefix("HTTP_").lower().replace("_", "-").encode()
        for key, got in scope["headers"]:
            if key == header:
                return got.decode("latin-1").split(",", 1)[0].strip() == value
    return scope.get("scheme") == "https"


__all__ = ["PublishEndpoint"]
