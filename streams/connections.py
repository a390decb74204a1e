"""Provides the connections as a process's hub sees them: each Subscriber, and each tenant's
set of them indexed by topic pattern, so that finding an event's recipients costs no scan."""

import asyncio
import functools
import struct
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from django.conf import settings

from streams.envelope import Envelope

Send = Callable[[dict], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]


def server_send(send: Send) -> Send:
    """The server's own `send` beneath Channels' session middleware.

    The session wrapper inspects every message to save sessions and set cookies on HTTP
    responses; the hub's frames never touch a session, so it writes past the wrapper.
    """
    while hasattr(getattr(send, "__self__", None), "real_send"):
        send = send.__self__.real_send
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
    transport = getattr(server_protocol(send), "transport", None)
    if not all(hasattr(transport, a) for a in ("dataBuffer", "offset", "_tempDataLen")):
        return None

    def backlog() -> int:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    return backlog


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
    is just bytes appended to the transport, in the same order as an ASGI send would put them.

    On plain TCP with nothing buffered, the frame goes to the socket at once: Twisted's own
    write would register the socket for writability and unregister it after its next loop turn,
    two epoll changes per connection per event that cost more than the send itself (profiled at
    1000 subscribers). What the socket does not take goes to Twisted's buffer, behind which any
    later frame queues, so order holds and a slow reader's backlog still shows (4008).
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
    if protocol is None or not all(hasattr(protocol, a) for a in (*needed, "transport")):
        return None
    open_state, ground = protocol.STATE_OPEN, protocol.SEND_STATE_GROUND
    transport = protocol.transport
    sock = transport.socket if _plain_tcp(transport) else None

    def write(frame: bytes) -> bool:
        if (
            protocol.state != open_state
            or protocol.send_state != ground
            or protocol._perMessageCompress is not None
            or protocol.send_queue  # queued bytes go first: writing now would overtake them
            or protocol.transport is None
        ):
            return False
        if (
            sock is not None
            and transport.connected
            and not transport._writeDisconnected
            and not transport._tempDataBuffer
            and len(transport.dataBuffer) == transport.offset
        ):
            try:
                sent = sock.send(frame)
            except OSError:
                # Full (EAGAIN) or failing: Twisted's own write retries or finds the error and
                # closes the connection through its usual path.
                sent = 0
            if sent == len(frame):
                return True
            frame = frame[sent:]
        transport.write(frame)
        return True

    return write


class Subscriber:
    """One live connection as the hub sees it; made by a consumer when it connects."""

    __slots__ = (
        "backlog",
        "close",
        "closed",
        "connection_id",
        "epoch",
        "key_id",
        "last_seen",
        "last_seq",
        "next_ping",
        "opening",
        "patterns",
        "pending",
        "pending_bytes",
        "send",
        "session",
        "tenant_id",
        "transport",
        "write_frame",
    )

    def __init__(
        self,
        *,
        transport: str,
        tenant_id: int,
        key_id: int | None,
        patterns: Iterable[str],
        send: Send,
        close: Close,
        session: tuple[int, str] | None = None,
    ) -> None:
        self.connection_id = uuid.uuid4().hex
        self.transport = transport
        self.tenant_id = tenant_id
        self.key_id = key_id
        self.session = session  # (user id, session key) when a dashboard session subscribed
        self.patterns = tuple(patterns)
        self.send = server_send(send)
        self.close = close
        self.backlog = transport_backlog(self.send)
        self.write_frame = frame_writer(self.send) if transport == "websocket" else None
        self.last_seq = 0
        self.epoch: str | None = None  # of the events it got while replaying, when known
        self.last_seen = time.monotonic()
        self.next_ping = 0.0  # when the heartbeat pings it next; set at its first tick
        # True from joining the hub until its welcome is sent: nothing else may go first.
        self.opening = False
        # Not None while replaying: live events wait here so replay hands over without a gap.
        self.pending: list[Envelope] | None = None
        self.pending_bytes = 0
        self.closed = False

    def hold(self, envelope: Envelope) -> bool:
        """Keeps a live event back while the connection replays (`pending` is not None);
        False when the events held would pass half of EVENTHUB_MAX_BUFFER_BYTES: a replay that
        long makes the connection a slow consumer, whose memory must not grow without bound.
        (Half: written at the hand-over on top of what the replay left unread, they must not
        reach the heartbeat's slow-consumer limit by themselves.)"""
        self.pending_bytes += len(envelope.frame)
        if self.pending_bytes > settings.EVENTHUB_MAX_BUFFER_BYTES // 2:
            return False
        self.pending.append(envelope)
        return True

    def take_pending(self) -> list[Envelope]:
        """The live events held back so far; holding goes on (from none) until `pending` is
        set to None."""
        held, self.pending, self.pending_bytes = self.pending or [], [], 0
        return held


class TenantHub:
    """One tenant's local connections, indexed by pattern so matching costs no scan, with the
    tenant's own delivery queue and lock: one tenant's deliveries never wait for another's."""

    __slots__ = (
        "by_transport",
        "draining",
        "early",
        "epoch",
        "exact",
        "inbox",
        "inbox_events",
        "last_seq",
        "lock",
        "prefix_lengths",
        "prefixes",
        "retired_epochs",
        "subscribers",
        "wildcard",
    )

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.wildcard: set[Subscriber] = set()
        self.exact: dict[str, set[Subscriber]] = {}
        self.prefixes: dict[str, set[Subscriber]] = {}
        # How many distinct prefixes of each length `prefixes` holds: an event looks up only
        # its topic's own prefixes of those lengths, never every prefix of the tenant.
        self.prefix_lengths: dict[int, int] = {}
        self.by_transport = {"websocket": 0, "sse": 0}
        # The last seq this process delivered, and its epoch; None until the tenant's current
        # seq is known, while arriving events wait in `early`.
        self.last_seq: int | None = None
        self.epoch = ""
        # Epochs of sequences re-seeded since: their late events were delivered or are gone.
        self.retired_epochs: set[str] = set()
        self.early: list[Envelope] = []
        # Layer messages waiting for delivery, in arrival order, and the events they hold.
        self.inbox: deque[list[Envelope]] = deque()
        self.inbox_events = 0
        self.draining = False
        # Deliveries of this tenant (from the layer, from joins and from catch-up) run one at a
        # time, so each connection sees seqs in order.
        self.lock = asyncio.Lock()

    def add(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)
        self.by_transport[sub.transport] += 1
        for pattern in sub.patterns:
            if pattern == "*":
                self.wildcard.add(sub)
            elif pattern.endswith("*"):
                prefix = pattern[:-1]
                members = self.prefixes.get(prefix)
                if members is None:
                    members = self.prefixes[prefix] = set()
                    length = len(prefix)
                    self.prefix_lengths[length] = self.prefix_lengths.get(length, 0) + 1
                members.add(sub)
            else:
                self.exact.setdefault(pattern, set()).add(sub)

    def remove(self, sub: Subscriber) -> bool:
        if sub not in self.subscribers:
            return False
        self.subscribers.discard(sub)
        self.by_transport[sub.transport] -= 1
        for pattern in sub.patterns:
            if pattern == "*":
                self.wildcard.discard(sub)
                continue
            index, key = (
                (self.prefixes, pattern[:-1]) if pattern.endswith("*") else (self.exact, pattern)
            )
            members = index.get(key)
            if members is not None:
                members.discard(sub)
                if not members:
                    del index[key]
                    if index is self.prefixes:
                        self._forget_prefix_length(len(key))
        return True

    def _forget_prefix_length(self, length: int) -> None:
        left = self.prefix_lengths[length] - 1
        if left:
            self.prefix_lengths[length] = left
        else:
            del self.prefix_lengths[length]

    def recipients(self, topic: str) -> Iterable[Subscriber]:
        if not self.exact and not self.prefixes:
            return tuple(self.wildcard)
        found = set(self.wildcard)
        members = self.exact.get(topic)
        if members:
            found |= members
        if self.prefixes:
            size = len(topic)
            lengths = self.prefix_lengths
            # O(min(len(topic), distinct lengths)) lookups, however many prefixes there are.
            candidates = lengths if len(lengths) < size else range(1, size + 1)
            prefixes = self.prefixes
            for length in candidates:
                if length <= size:
                    members = prefixes.get(topic[:length])
                    if members:
                        found |= members
        return found
