"""Provides the connections as a process's hub sees them: each Subscriber (of its transport's
kind, which frames events and pings for it), and each tenant's set of them indexed by topic
pattern, so that finding an event's recipients costs no scan.

Over 300 lines: a connection's state, its framing and its tenant's index are one model, which
the hub, replay and the supervisor all read."""

import asyncio
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from django.conf import settings

from streams.delivery.daphne_transport import (
    Send,
    chunk_writer,
    frame_writer,
    server_send,
    sse_chunk,
    transport_backlog,
    websocket_text_frame,
)
from streams.envelope import Envelope
from streams.tokens import TokenGrant

Close = Callable[[int, str], Awaitable[None]]

PING_WS = {"type": "websocket.send", "text": '{"type":"ping"}'}
PING_SSE = {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}
PING_WS_FRAME = websocket_text_frame(PING_WS["text"])
PING_SSE_CHUNK = sse_chunk(b": ping\n\n")


class Frames:
    """Events going to a connection together (one event, a run of them, a replay page), and
    their bytes on each transport, built on first use from each event's frame; `encoded`, when
    several Frames share it, encodes each event once for all of them (a broadcast run)."""

    __slots__ = ("_encoded", "_sse", "_sse_chunk", "_websocket", "envelopes")

    def __init__(
        self, envelopes: list[Envelope], encoded: dict[tuple[str, int], bytes] | None = None
    ) -> None:
        self.envelopes = envelopes
        self._encoded = {} if encoded is None else encoded
        self._websocket: bytes | None = None
        self._sse: bytes | None = None
        self._sse_chunk: bytes | None = None

    def _bytes(self, transport: str, envelope: Envelope) -> bytes:
        key = (transport, envelope.seq)
        data = self._encoded.get(key)
        if data is None:
            if transport == "websocket":
                data = websocket_text_frame(envelope.frame)
            else:
                data = envelope.sse_bytes()
            self._encoded[key] = data
        return data

    def websocket(self) -> bytes:
        if self._websocket is None:
            self._websocket = b"".join(self._bytes("websocket", e) for e in self.envelopes)
        return self._websocket

    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = b"".join(self._bytes("sse", e) for e in self.envelopes)
        return self._sse

    def sse_chunk(self) -> bytes:
        """`sse()` as one HTTP chunk, for the SSE connections' direct writer."""
        if self._sse_chunk is None:
            self._sse_chunk = sse_chunk(self.sse())
        return self._sse_chunk


class Subscriber:
    """One live connection as the hub sees it; made by a consumer when it connects.

    `Subscriber(transport=...)` makes the transport's own kind (WebSocketSubscriber,
    SseSubscriber), which knows how to frame events and pings for its client.
    """

    transport: str
    silence_closes = False  # True where a client that sends nothing for long is closed (4408)

    def __new__(cls, *, transport: str, **_kwargs):
        if cls is Subscriber:
            cls = _KINDS[transport]
        return super().__new__(cls)

    __slots__ = (
        "backlog",
        "close",
        "closed",
        "connection_id",
        "epoch",
        "expiry",
        "key_id",
        "last_seen",
        "last_seq",
        "next_ping",
        "opening",
        "patterns",
        "pending",
        "pending_bytes",
        "presence",
        "send",
        "session",
        "tenant_id",
        "token",
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
        token: TokenGrant | None = None,
        presence: bool = False,
    ) -> None:
        self.connection_id = uuid.uuid4().hex
        self.transport = transport
        self.tenant_id = tenant_id
        self.key_id = key_id
        self.session = session  # (user id, session key) when a dashboard session subscribed
        # The subscriber token it holds now (its expiry ends the connection; see Hub), if any.
        self.token = token
        self.expiry: asyncio.TimerHandle | None = None
        self.presence = presence  # it asked for join / leave frames (`presence=1`)
        self.patterns = tuple(patterns)
        self.send = server_send(send)
        self.close = close
        self.backlog = transport_backlog(self.send)
        # Puts prebuilt bytes (a WebSocket frame, an SSE chunk) straight on the socket, where
        # the server lets it (daphne); None elsewhere, where everything goes through ASGI.
        self.write_frame = (frame_writer if transport == "websocket" else chunk_writer)(self.send)
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
        assert self.pending is not None, "only while replaying"
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

    def write(self, frames: Frames) -> bool:
        """Puts the frames on the connection's socket at once, where the server lets it (True);
        False when they must go through ASGI (`send_events`). Never yields."""
        return False

    async def send_events(self, frames: Frames) -> None:
        """Sends the frames' events through ASGI, in order."""
        raise NotImplementedError

    async def send_ping(self) -> None:
        """Sends the heartbeat's ping, straight to the socket where it can."""
        raise NotImplementedError

    async def send_presence(self, kind: str, text: str) -> None:
        """Sends a presence frame (`kind`: join or leave; `text`: its JSON), without an id."""
        raise NotImplementedError


class WebSocketSubscriber(Subscriber):
    """A WebSocket client: events as text frames, pings as `{"type":"ping"}`; closed when it
    falls silent."""

    __slots__ = ()
    silence_closes = True

    def write(self, frames: Frames) -> bool:
        return self.write_frame is not None and self.write_frame(frames.websocket())

    async def send_events(self, frames: Frames) -> None:
        for envelope in frames.envelopes:
            await self.send({"type": "websocket.send", "text": envelope.frame})

    async def send_ping(self) -> None:
        # Prebuilt, as an event's frame is; through ASGI when the writer declines.
        if self.write_frame is None or not self.write_frame(PING_WS_FRAME):
            await self.send(PING_WS)

    async def send_presence(self, kind: str, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})


class SseSubscriber(Subscriber):
    """An SSE stream: events as `id:`/`event:`/`data:` blocks in one chunk, pings as a `: ping`
    comment."""

    __slots__ = ()

    def write(self, frames: Frames) -> bool:
        return self.write_frame is not None and self.write_frame(frames.sse_chunk())

    async def send_events(self, frames: Frames) -> None:
        await self.send({"type": "http.response.body", "body": frames.sse(), "more_body": True})

    async def send_ping(self) -> None:
        if self.write_frame is None or not self.write_frame(PING_SSE_CHUNK):
            await self.send(PING_SSE)

    async def send_presence(self, kind: str, text: str) -> None:
        body = f"event: {kind}\ndata: {text}\n\n".encode()
        await self.send({"type": "http.response.body", "body": body, "more_body": True})


_KINDS: dict[str, type[Subscriber]] = {"websocket": WebSocketSubscriber, "sse": SseSubscriber}


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
        "next_expiry",
        "prefix_lengths",
        "prefixes",
        "retired_epochs",
        "subscribers",
        "watchers",
        "wildcard",
    )

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        # Per exact topic, the connections that asked for its join / leave frames (`presence=1`):
        # a change is sent without a look at the topic's other connections.
        self.watchers: dict[str, set[Subscriber]] = {}
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
        # No token of its welcomed connections expires before this (a UNIX time; an upper
        # bound after expiries or refreshes, made exact by the hub's `_expire_due`).
        self.next_expiry = math.inf

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
                if sub.presence:
                    self.watchers.setdefault(pattern, set()).add(sub)

    def remove(self, sub: Subscriber) -> bool:
        if sub not in self.subscribers:
            return False
        self.subscribers.discard(sub)
        self.by_transport[sub.transport] -= 1
        for pattern in sub.patterns:
            if pattern == "*":
                self.wildcard.discard(sub)
                continue
            if sub.presence and pattern in self.watchers:
                watching = self.watchers[pattern]
                watching.discard(sub)
                if not watching:
                    del self.watchers[pattern]
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
