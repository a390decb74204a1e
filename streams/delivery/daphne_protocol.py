"""Provides daphne's WebSocket protocol as the hub serves it: every client frame bounded before
it is read, pongs taken without waking the consumer, and less memory held per connection.

daphne builds one `WebSocketProtocol` (https://github.com/django/daphne/blob/main/daphne/ws_protocol.py,
on autobahn's `WebSocketServerProtocol`) per connection from its factory's `protocol` class, the
factory option Twisted and autobahn give for this. `install()` makes that class a subclass of
daphne's, so the behaviour below comes with every connection instead of being patched onto
each one by its consumer. Under another server nothing here is used.
"""

import sys
import time
from typing import Any

MAX_CLIENT_FRAME_BYTES = 4096  # contract v2: larger client frames close the connection (1009)
MESSAGE_TOO_BIG = 1009
# The pongs clients send (eventhub.js the first; json.dumps the second).
PONGS = frozenset({b'{"type":"pong"}', b'{"type": "pong"}'})

_installed = False


def install() -> None:
    """Called once when the ASGI application is imported; under daphne (Twisted), makes its
    WebSocket factory build `EventhubWebSocketProtocol`s. Does nothing under another server."""
    global _installed
    if _installed or "twisted.internet.reactor" not in sys.modules:
        return
    # Imported only now: under another server there is no Twisted reactor to import them with.
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

    base = _define(WebSocketProtocol)
    set_options = WebSocketFactory.setProtocolOptions

    def setProtocolOptions(self, *args, **kwargs) -> None:
        # daphne's server sets its options once, before it listens.
        set_options(self, *args, **kwargs)
        self.protocol = with_options(base, self)

    WebSocketFactory.setProtocolOptions = setProtocolOptions
    WebSocketFactory.protocol = base
    _installed = True


def with_options(base: Any, factory) -> type:
    """`base` with the factory's autobahn options, and the hub's own, as class attributes.

    autobahn copies each of its 40-odd options from the factory onto every new protocol
    instance, unless the instance already has the attribute. An instance dict of a hundred
    keys cost 3.3 KB a connection (tracemalloc over 1000 idle connections); read from the
    class, the options are held once.
    """
    options = {}
    for name in base.CONFIG_ATTRS:
        if name in base.OWN_OPTIONS:
            continue  # the hub's value, on `base`, wins
        value = getattr(factory, name)
        # A function (perMessageCompressionAccept) stays one: not a method of the protocol.
        options[name] = staticmethod(value) if callable(value) else value
    return type(base.__name__, (base,), options)


def _define(daphne_protocol: Any) -> type:
    from twisted.web.http import HTTPChannel

    class EventhubWebSocketProtocol(daphne_protocol):
        """daphne's WebSocket protocol, with the hub's frame limit and pong handling."""

        # Options of the hub's own, over daphne's: client frames of at most
        # MAX_CLIENT_FRAME_BYTES, and a close frame, not a dropped connection, on a failure
        # (autobahn's servers drop the TCP connection by default; the client then sees 1006).
        OWN_OPTIONS = frozenset({"maxFramePayloadSize", "failByDrop"})
        maxFramePayloadSize = MAX_CLIENT_FRAME_BYTES
        failByDrop = False
        # Set by the WebSocket consumer once it admitted the client: the subscriber whose
        # `last_seen` a pong renews.
        pong_subscriber: Any = None

        def connectionMade(self) -> None:
            """Called by daphne when it hands the socket over from the HTTP channel that read
            the upgrade request, before the handshake is answered."""
            transport: Any = self.transport
            if isinstance(getattr(transport, "producer", None), HTTPChannel):
                # That channel stays the transport's registered producer after the upgrade:
                # it, its request, the request's headers and its read buffer then lived as long
                # as the WebSocket (about 3 KB each). Nothing of HTTP is left to produce; the
                # same step is the workaround in https://github.com/django/daphne/issues/170.
                transport.unregisterProducer()
            super().connectionMade()

        def onOpen(self) -> None:
            """Called by autobahn once the handshake is answered, after daphne made the
            application's scope: lets go of what only the handshake read."""
            # autobahn keeps the request's and the response's bytes and the parsed headers
            # (shared with daphne's ConnectionRequest) for the connection's life, about 1.5 KB;
            # the application reads its headers from the scope, daphne only the path later.
            self.http_request_data = self.http_response_data = b""
            self.http_headers: dict[str, str] = {}
            request: Any = getattr(self, "request", None)
            if request is not None:
                request.headers = {}
            super().onOpen()

        def onMessageFrameBegin(self, length: int) -> None:
            """Called by autobahn as each client frame begins, before its payload is read:
            fails the connection with 1009 when the message so far (a fragmented one adds up)
            announces more than MAX_CLIENT_FRAME_BYTES.

            autobahn's `maxMessagePayloadSize` cannot be lowered for this: it also caps what
            the server sends (events are up to EVENTHUB_MAX_EVENT_BYTES). So the frame size is
            its option and the message total is checked where autobahn checks its own.
            """
            super().onMessageFrameBegin(length)
            total = getattr(self, "message_data_total_length", 0)
            if total > MAX_CLIENT_FRAME_BYTES and not self.failedByMe:
                self._fail_connection(
                    MESSAGE_TOO_BIG, f"message of {total} bytes exceeds {MAX_CLIENT_FRAME_BYTES}"
                )

        def _fail_connection(self, code: int = 1001, reason: str = "going away") -> None:
            """Called by autobahn on a protocol failure, and above on a frame too big."""
            super()._fail_connection(code, reason)
            transport: Any = self.transport
            if code == MESSAGE_TOO_BIG and hasattr(transport, "pauseProducing"):
                # What the client sent after an oversized frame's header (up to the whole
                # frame, daphne's 1 MiB) would still be read and parsed until the close
                # handshake ends: the close frame goes out, nothing more comes in, and
                # autobahn drops the connection after its close handshake timeout.
                transport.pauseProducing()

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            """Called by autobahn for each client message: a pong (the exact bytes of PONGS)
            of an admitted subscriber marks it alive right here.

            Thousands of connections answer their pings within the same few milliseconds:
            through the consumer each pong cost a queue put, a task wake-up, Channels'
            dispatch and a JSON parse, and a crowd's pongs held the loop for tens of
            milliseconds (bench/noisy.py burst). Any other message goes to the consumer.
            """
            sub = self.pong_subscriber
            if sub is not None and payload in PONGS and not isBinary and not self.muted:
                sub.last_seen = time.monotonic()
                self.last_ping = time.time()  # as daphne's onMessage: no keep-alive ping due
                return
            super().onMessage(payload, isBinary)

    return EventhubWebSocketProtocol
