"""Provides the guarantee that a consumer leaves the hub however its connection ends, and the
replay task that a consumer starts once it has welcomed its client."""

import asyncio

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

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]  # a mixin
        finally:
            if self.replaying is not None:
                self.replaying.cancel()
            if self.sub is not None:
                await runtime.get_hub().unsubscribe(self.sub)
            release_write_buffer(self.base_send)  # type: ignore[attr-defined]  # a mixin
