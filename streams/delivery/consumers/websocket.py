"""Provides the WebSocket subscriber consumer."""

import json
import logging
import time

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from streams import runtime
from streams.delivery.admission import (
    Refusal,
    iso_time,
    presence_snapshot,
    subscription_admit,
    subscription_start,
    token_refresh,
    welcome,
)
from streams.delivery.consumers.membership import HubMembershipMixin
from streams.delivery.daphne_protocol import MAX_CLIENT_FRAME_BYTES, MESSAGE_TOO_BIG
from streams.delivery.daphne_transport import server_protocol
from streams.delivery.hub import Subscriber
from tenants.selectors import CredentialsUnavailable

logger = logging.getLogger(__name__)

SLOW_CONSUMER = 4008
SLOW_CONSUMER_CLOSE_GRACE = 5.0  # seconds a closed slow consumer may take to read to the close


def client_frame_too_big(text_data: str | None, bytes_data: bytes | None) -> bool:
    """True when a client frame's payload is over MAX_CLIENT_FRAME_BYTES, measured in bytes."""
    if bytes_data is not None:
        return len(bytes_data) > MAX_CLIENT_FRAME_BYTES
    if text_data is None:
        return False
    # UTF-8 takes one to four bytes a character: encode only when the count leaves it open.
    if len(text_data) > MAX_CLIENT_FRAME_BYTES:
        return True
    if len(text_data) * 4 <= MAX_CLIENT_FRAME_BYTES:
        return False
    return len(text_data.encode()) > MAX_CLIENT_FRAME_BYTES


class EventsWebsocketConsumer(HubMembershipMixin, AsyncJsonWebsocketConsumer):
    """Streams a tenant's events to one WebSocket client.

    It has no channel of its own: the process's hub writes event frames straight to it.
    """

    # No per-connection channel: the hub is the only member of the tenant group in this process.
    channel_layer_alias = "eventhub.none"

    async def connect(self) -> None:
        """Called when the handshake arrives: admits the client, or accepts and closes with
        the reason as a close code, so that a browser can tell why."""
        await self.accept()
        try:
            admission = await subscription_admit(self.scope, last_event_id_header=False)
            self.sub = Subscriber(
                transport="websocket",
                tenant_id=admission.tenant_id,
                key_id=admission.key_id,
                patterns=admission.patterns,
                send=self.base_send,
                close=self._close,
                session=admission.session,
                token=admission.token,
                presence=admission.presence,
            )
            plan = await subscription_start(self.sub, admission)
            presence = await presence_snapshot(self.sub)
        except Refusal as refusal:
            # %r: a detail may quote what the client sent.
            logger.info("websocket refused (%s): %r", refusal.close_code, refusal.detail)
            await self._close(refusal.close_code, refusal.detail[:120])
            return
        protocol = server_protocol(self.base_send)
        if hasattr(protocol, "pong_subscriber"):  # daphne's, as daphne_protocol installs it
            protocol.pong_subscriber = self.sub
        await self.send_json(welcome(self.sub, recovered=plan.recovered, presence=presence))
        self.replay(plan)

    async def _close(self, code: int, reason: str) -> None:
        """Closes with a code and a reason the client can read.

        daphne passes neither the reason nor codes such as 1001 (its WebSocket library only
        lets it send 1000 and 3000-4999), so under daphne the close frame is sent through the
        protocol directly; the reason also goes out first as an error frame. Upstream:
        https://github.com/django/daphne/issues/374 (and autobahn's
        https://github.com/crossbario/autobahn-python/issues/1642).
        """
        if code >= 4000:
            await self.send_json({"type": "error", "code": code, "detail": reason})
        protocol = server_protocol(self.base_send)
        if hasattr(protocol, "sendCloseFrame") and protocol.state == protocol.STATE_OPEN:
            if code == SLOW_CONSUMER and hasattr(protocol, "closeHandshakeTimeout"):
                # The close frame queues behind everything the client left unread, and daphne
                # drops the connection (and that queue) 1 s after closing: a client that reads
                # on gets a few seconds to reach the close frame and learn why. Not longer: the
                # connection no longer counts against its tenant's limit, but its buffer does.
                protocol.closeHandshakeTimeout = max(
                    protocol.closeHandshakeTimeout, SLOW_CONSUMER_CLOSE_GRACE
                )
            protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:120], isReply=False)
            return
        await self.close(code=code, reason=reason)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        """Called with each client frame; any frame proves the client alive."""
        if self.sub is None:
            return
        self.sub.last_seen = time.monotonic()
        if client_frame_too_big(text_data, bytes_data):
            # Under daphne autobahn closed it already (daphne_protocol); other servers
            # hand over whatever they accept, which is never parsed here.
            await runtime.get_hub().close(self.sub, MESSAGE_TOO_BIG, "frame too large")
            return
        try:
            message = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser
            message = None
        if not isinstance(message, dict):
            await runtime.get_hub().close(self.sub, 4400, "frames must be JSON objects")
            return
        kind = message.get("type")
        if kind == "ping":
            await self.send(text_data='{"type":"pong"}')
        elif kind == "refresh":
            await self._refresh(message.get("token"))

    async def _refresh(self, token: object) -> None:
        """Called with a `refresh` frame: the connection goes on under the new token, or is
        closed (4401 invalid or expired, 4403 not allowed)."""
        sub = self.sub
        assert sub is not None, "frames are read once admitted"
        hub = runtime.get_hub()
        if not isinstance(token, str) or not token:
            await hub.close(sub, 4400, "A refresh frame needs a token.")
            return
        try:
            grant = await token_refresh(sub, token)
        except CredentialsUnavailable:
            # The database is down and the new token's key unknown here: the connection goes
            # on under its current token; the client may send the refresh again.
            await self.send_json({"type": "error", "code": 1013, "detail": "retry the refresh"})
            return
        except Refusal as refusal:
            logger.info("refresh refused (%s): %r", refusal.close_code, refusal.detail)
            await hub.close(sub, refusal.close_code, refusal.detail[:120])
            return
        if sub.closed:
            return  # expired or closed while the new token was checked
        hub.refresh(sub, grant)
        await self.send_json({"type": "refreshed", "expires_at": iso_time(grant.expires_at)})

    async def disconnect(self, code) -> None:
        """Called when the client or the network closes the socket."""
        if self.sub is not None:
            await runtime.get_hub().unsubscribe(self.sub)
