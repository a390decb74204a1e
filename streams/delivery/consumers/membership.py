"""Provides the guarantee that a consumer leaves the hub however its connection ends, and the
replay task that a consumer starts once it has welcomed its client."""

import asyncio

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer

from streams import runtime
from streams.delivery.daphne_transport import release_write_buffer
from streams.delivery.hub import Subscriber
from streams.delivery.replay import ReplayPlan, replay_stream


class HubMembershipMixin:
    """Releases the consumer's hub membership when its application instance ends for any
    reason: a clean close, a dropped network, a crash, or the server cancelling it."""

    sub: Subscriber | None = None
    replaying: asyncio.Task | None = None

    def replay(self, plan: ReplayPlan) -> None:
        """Called once the welcome is sent: streams the replay, then live events, in a task of
        its own, so that the consumer goes on handling its client's messages meanwhile (its
        frames, its disconnect). From now on the hub's heartbeat watches the connection (pings,
        the stale and slow-consumer checks, revocation), its replay included."""
        sub = self.sub
        assert sub is not None, "admitted before its welcome"
        sub.opening = False
        runtime.get_hub().watch_expiry(sub)
        self.replaying = asyncio.get_running_loop().create_task(
            replay_stream(sub, plan), name=f"eventhub-replay-{sub.connection_id}"
        )
        self.replaying.add_done_callback(self._replayed)

    def _replayed(self, task: asyncio.Task) -> None:
        # A finished task keeps its coroutine: not for the rest of a connection's life.
        if self.replaying is task:
            self.replaying = None

    async def __call__(self, scope, receive, send):
        """Runs the consumer as Channels' AsyncConsumer does, for a consumer without a channel
        layer: each message from the server goes to its handler, until one raises
        StopConsumer.

        Channels' own loop (`await_many_dispatch`) keeps a task and an `asyncio.wait` per
        connection to read one source, and closes the thread's old database connections
        before every message; this consumer reads only `receive`, and its database work all
        goes through `database_sync_to_async`, which closes them itself. Measured with
        bench/connections.py: about 3 KB less per idle connection.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            try:
                while True:
                    message = await receive()
                    handler = getattr(self, get_handler_name(message), None)
                    if handler is None:
                        raise ValueError(f"No handler for message type {message['type']}")
                    await handler(message)
            except StopConsumer:
                pass  # the connection ended: as Channels' own loop, a clean exit
        finally:
            if self.replaying is not None:
                self.replaying.cancel()
            if self.sub is not None:
                await runtime.get_hub().unsubscribe(self.sub)
            release_write_buffer(self.base_send)  # type: ignore[attr-defined]  # a mixin
