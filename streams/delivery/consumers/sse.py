"""Provides the Server-Sent Events subscriber consumer."""

import json
import logging

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer

from streams import runtime
from streams.delivery.admission import (
    Refusal,
    presence_snapshot,
    subscription_admit,
    subscription_start,
    welcome,
)
from streams.delivery.consumers.membership import HubMembershipMixin
from streams.delivery.consumers.websocket import SLOW_CONSUMER, SLOW_CONSUMER_CLOSE_GRACE
from streams.delivery.daphne_transport import drop_unread_later
from streams.delivery.hub import Subscriber

logger = logging.getLogger(__name__)

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


class EventsSseConsumer(HubMembershipMixin, AsyncHttpConsumer):
    """Streams a tenant's events to one EventSource client.

    AsyncHttpConsumer ends the consumer as soon as `handle()` returns, and a `handle()` that
    loops would block the consumer's other messages (`http.disconnect` above all). So this
    consumer answers `http.request` by opening the stream and returning; the hub writes the
    events, and the consumer lives on until `http.disconnect`.
    """

    # No per-connection channel: the hub writes to this consumer directly.
    channel_layer_alias = "eventhub.none"

    async def http_request(self, message) -> None:
        """Called with the request (GET has no body to wait for): opens the stream or refuses."""
        if message.get("more_body"):
            return
        if self.scope["method"] not in ("GET", "HEAD"):
            await self._refuse(405, "Use GET.", extra=[(b"allow", b"GET")])
            return
        try:
            admission = await subscription_admit(self.scope, last_event_id_header=True)
            if self.scope["method"] == "HEAD":
                # What a GET would answer, without its stream: daphne writes a body past
                # Twisted's HEAD guard, so none is started (and the hub never sees it).
                await self.send_headers(status=200, headers=STREAM_HEADERS)
                await self.send_body(b"")
                raise StopConsumer
            self.sub = Subscriber(
                transport="sse",
                tenant_id=admission.tenant_id,
                key_id=admission.key_id,
                patterns=admission.patterns,
                send=self.base_send,
                close=self._end_stream,
                session=admission.session,
                token=admission.token,
                presence=admission.presence,
            )
            plan = await subscription_start(self.sub, admission)
            presence = await presence_snapshot(self.sub)
        except Refusal as refusal:
            self.sub = None
            extra = [(b"www-authenticate", b"Bearer")] if refusal.http_status == 401 else []
            if refusal.http_status in (429, 503):
                extra.append((b"retry-after", b"5"))
            await self._refuse(refusal.http_status, refusal.detail, extra=extra)
            return
        greeting = welcome(self.sub, recovered=plan.recovered, presence=presence)
        frame = json.dumps(greeting, separators=(",", ":"))
        opening = f"retry: 3000\n\nevent: welcome\ndata: {frame}\n\n".encode()
        await self.send_headers(status=200, headers=STREAM_HEADERS)
        await self.send_body(opening, more_body=True)
        self.replay(plan)

    async def _refuse(self, status: int, detail: str, *, extra: list) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), *extra]
        await self.send_response(status, body, headers=headers)
        raise StopConsumer

    async def _end_stream(self, code: int, reason: str) -> None:
        """Ends the response; the server then sends http.disconnect, which stops the consumer."""
        await self.send_body(b"", more_body=False)
        if code == SLOW_CONSUMER:
            # As a WebSocket's close frame, the end queues behind what the client left unread.
            drop_unread_later(self.base_send, SLOW_CONSUMER_CLOSE_GRACE)

    async def http_disconnect(self, message) -> None:
        """Called when the client goes away or the response has ended."""
        if self.sub is not None:
            await runtime.get_hub().unsubscribe(self.sub)
        raise StopConsumer
