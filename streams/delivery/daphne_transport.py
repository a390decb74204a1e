"""Provides what the hub reaches for beneath ASGI when the server is daphne: the server's own
`send` past Channels' wrappers, the protocol object behind it, a connection's unread backlog,
and a writer that puts a prebuilt WebSocket frame straight on the socket.

ASGI has no way to say any of this; every function here returns None (or declines) under
another server, and the hub then goes through ASGI. The daphne and Twisted attributes read are
those of daphne's `WebSocketProtocol` (https://github.com/django/daphne/blob/main/daphne/ws_protocol.py),
autobahn's `WebSocketServerProtocol` and Twisted's `tcp.Server`
(https://github.com/twisted/twisted/blob/trunk/src/twisted/internet/abstract.py,
`FileDescriptor.write` and `doWrite`)."""

import asyncio
import functools
import struct
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict], Awaitable[None]]


def server_send(send: Send) -> Send:
    """The server's own `send` beneath Channels' session middleware.

    The session wrapper inspects every message to save sessions and set cookies on HTTP
    responses; the hub's frames never touch a session, so it writes past the wrapper.
    """
    owner: Any = getattr(send, "__self__", None)
    while hasattr(owner, "real_send"):
        send = owner.real_send
        owner = getattr(send, "__self__", None)
    return send


def server_protocol(send: Send):
    """The daphne protocol object behind a consumer's `send`, or None under another server.

    Under daphne, the server's `send` is `partial(server.handle_reply, protocol)`.
    """
    send = server_send(send)
    return send.args[0] if isinstance(send, functools.partial) and send.args else None


def transport_backlog(send: Send) -> Callable[[], int] | None:
    """Returns a function giving the bytes a connection has not yet taken off the server, or
    None when the server does not let us see it.

    ASGI gives an application no view of a client's backlog, and daphne keeps writing to a
    client that does not read until the process runs out of memory. Under daphne, `send` is
    `partial(server.handle_reply, protocol)` and the protocol's Twisted transport buffers what
    the client has not read; reading that buffer is what lets the hub close a slow consumer
    (4008) instead.
    """
    transport: Any = getattr(server_protocol(send), "transport", None)
    if not all(hasattr(transport, a) for a in ("dataBuffer", "offset", "_tempDataLen")):
        return None
    return _Backlog(transport).__call__


class _Backlog:
    # A slotted object's bound method, not a closure: a third of the size, per connection.
    __slots__ = ("transport",)

    def __init__(self, transport) -> None:
        self.transport = transport

    def __call__(self) -> int:
        transport = self.transport
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def release_write_buffer(send: Send) -> None:
    """Drops what a connection that is gone still had buffered for its client (one that
    vanished mid-replay leaves up to a replay page); does nothing while it is connected, or
    under another server.

    Nothing will ever send it, but daphne's protocol and its transport live on in reference
    cycles until the collector's next full pass, which EVENTHUB_GC_THRESHOLDS makes rare.
    """
    transport: Any = getattr(server_protocol(send), "transport", None)
    if _buffered(transport) and transport.disconnected:
        _forget_buffer(transport)


# How often a connection waiting to be dropped is checked for its client having read it all.
DRAIN_CHECK_SECONDS = 0.25


def drop_unread_later(send: Send, delay: float) -> None:
    """Drops the connection, and what it buffers for its client, unless the client has taken
    all of it within `delay` seconds; does nothing under another server.

    For an SSE stream ended as a slow consumer: once the response has ended, daphne keeps the
    connection for a next request, with the unread rest, for as long as the client neither
    reads nor goes (a WebSocket's is dropped by its close timeout). Measured by
    tests/e2e/test_churn.py before this: 100 SSE clients that never read kept 40 MB, and
    twelve rounds of them 480 MB. Checked every DRAIN_CHECK_SECONDS, not once at the end: a
    client that took it all may be waiting for the answer to its next request on the
    connection by then, which must not be dropped with it. (A client that takes it all and has
    its next answer partly unread within one check's interval is still dropped at the end.)
    """
    transport: Any = getattr(server_protocol(send), "transport", None)
    if not _buffered(transport) or not hasattr(transport, "abortConnection"):
        return
    unread = _Backlog(transport)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delay

    def check() -> None:
        if not unread():
            return  # the client took it all: the connection may serve its next request
        if not transport.connected:
            _forget_buffer(transport)  # gone: the transport may wait for the collector
            return
        left = deadline - loop.time()
        if left > 0:
            loop.call_later(min(DRAIN_CHECK_SECONDS, left), check)
            return
        _forget_buffer(transport)
        transport.abortConnection()

    loop.call_later(min(DRAIN_CHECK_SECONDS, delay), check)


def _buffered(transport) -> bool:
    needed = (
        "connected",
        "disconnected",
        "dataBuffer",
        "offset",
        "_tempDataBuffer",
        "_tempDataLen",
    )
    return all(hasattr(transport, a) for a in needed)


def _forget_buffer(transport) -> None:
    transport.dataBuffer, transport.offset = b"", 0
    transport._tempDataBuffer, transport._tempDataLen = [], 0


def websocket_text_frame(text: str) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 5.2): what a server sends.

    Built once per event; the same bytes then go to every local connection.
    """
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def _plain_tcp(transport) -> bool:
    """True for a plain Twisted TCP connection (not TLS, not another server's transport),
    whose socket and write buffer the frame writer may use as Twisted itself does."""
    try:
        from twisted.internet import tcp
    except ImportError:
        return False
    needed = (
        "socket",
        "connected",
        "dataBuffer",
        "offset",
        "_tempDataBuffer",
        "_writeDisconnected",
    )
    return type(transport) is tcp.Server and all(hasattr(transport, a) for a in needed)


def frame_writer(send: Send) -> Callable[[bytes], bool] | None:
    """Returns a function writing a prebuilt frame straight to a daphne WebSocket connection,
    or None under another server.

    Through ASGI each send costs daphne and its WebSocket library a re-encoding and a framing
    of the same message for every connection (measured: ~20 us each, 20 ms to reach 1000
    connections). The writer declines (returns False, and the caller sends through ASGI) unless
    the connection is open, uncompressed, between messages and has nothing queued, where a frame
    is just bytes appended to the transport (`_socket_writer`), in the same order as an ASGI
    send would put them.
    """
    protocol = server_protocol(send)
    needed = (
        "state",
        "STATE_OPEN",
        "send_state",
        "SEND_STATE_GROUND",
        "send_queue",
        "_perMessageCompress",
    )
    if protocol is None or not all(hasattr(protocol, a) for a in needed):
        return None
    if getattr(protocol, "transport", None) is None:
        return None
    return _FrameWriter(protocol).write


class _FrameWriter:
    """Writes prebuilt frames to one daphne WebSocket connection (see `frame_writer`)."""

    __slots__ = ("protocol", "put")

    def __init__(self, protocol) -> None:
        self.protocol = protocol
        self.put = _socket_writer(protocol.transport)

    def write(self, frame: bytes) -> bool:
        protocol = self.protocol
        if (
            protocol.state != protocol.STATE_OPEN
            or protocol.send_state != protocol.SEND_STATE_GROUND
            or protocol._perMessageCompress is not None
            or protocol.send_queue  # queued bytes go first: writing now would overtake them
            or protocol.transport is None
        ):
            return False
        self.put(frame)
        return True


def sse_chunk(body: bytes) -> bytes:
    """`body` as one HTTP/1.1 chunk (RFC 9112 7.1), as Twisted's `Request.write` frames it for
    a response without a length: what an SSE stream's bytes are on the wire.

    Built once per event run; the same bytes then go to every local SSE connection."""
    return b"%x\r\n%s\r\n" % (len(body), body)


def chunk_writer(send: Send) -> Callable[[bytes], bool] | None:
    """Returns a function writing a prebuilt chunk (`sse_chunk`) straight to a daphne HTTP
    response, or None under another server: the SSE counterpart of `frame_writer`.

    Through ASGI, each connection's send costs a coroutine through daphne's `handle_reply`,
    Twisted's chunk framing of the same body and a write that registers the socket for
    writability (measured at 1000 SSE connections: 3.5x the WebSocket writer's server CPU per
    event). The writer declines (the caller sends through ASGI) unless the response has started
    (its headers are out), is chunked (HTTP/1.1), and is neither finished nor disconnected;
    then the chunk is what `Request.write` would have put on the same transport.
    """
    request = server_protocol(send)
    needed = ("finished", "_disconnected", "startedWriting", "chunked", "channel")
    if request is None or not all(hasattr(request, a) for a in needed):
        return None
    channel = request.channel
    transport = getattr(channel, "transport", None)
    if transport is None:
        return None
    return _ChunkWriter(request, channel, transport).write


class _ChunkWriter:
    """Writes prebuilt chunks to one daphne HTTP response (see `chunk_writer`)."""

    __slots__ = ("channel", "put", "request")

    def __init__(self, request, channel, transport) -> None:
        self.request, self.channel = request, channel
        self.put = _socket_writer(transport)

    def write(self, chunk: bytes) -> bool:
        request = self.request
        if (
            request.finished
            or request._disconnected
            or not request.startedWriting
            or not request.chunked
            or request.channel is not self.channel
        ):
            return False
        self.put(chunk)
        return True


def _socket_writer(transport) -> Callable[[bytes], None]:
    """Returns a function putting bytes on a Twisted transport, in order with its own writes.

    On plain TCP with nothing buffered, the bytes go to the socket at once: Twisted's own
    write would register the socket for writability and unregister it after its next loop turn,
    two epoll changes per connection per event that cost more than the send itself (profiled at
    1000 subscribers). What the socket does not take goes to Twisted's buffer, behind which any
    later write queues, so order holds and a slow reader's backlog still shows (4008).
    """
    if not _plain_tcp(transport):
        return transport.write
    return _SocketWriter(transport).put


class _SocketWriter:
    __slots__ = ("sock", "transport")

    def __init__(self, transport) -> None:
        self.transport, self.sock = transport, transport.socket

    def put(self, data: bytes) -> None:
        transport = self.transport
        if (
            transport.connected
            and not transport._writeDisconnected
            and not transport._tempDataBuffer
            and len(transport.dataBuffer) == transport.offset
        ):
            try:
                sent = self.sock.send(data)
            except OSError:
                # Full (EAGAIN) or failing: Twisted's own write retries or finds the error and
                # closes the connection through its usual path.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)
