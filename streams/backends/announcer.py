"""Provides the hand-off of a tenant's accepted events to its channel-layer group, coalesced:
events accepted while the tenant's previous message is on its way to the layer go together in
the next one, so that under a burst the layer's round trips grow with the number of sends in
flight, not with the event rate (group commit). At a low rate each publish still goes out at
once, alone."""

import asyncio
import logging

from streams.envelope import Envelope
from streams.groups import tenant_group
from streams.layer_messages import published_message

logger = logging.getLogger(__name__)

# At most this many events in one layer message: a coalesced burst stays a few hundred KB.
MAX_EVENTS_PER_MESSAGE = 500


class Announcer:
    """One per engine, on the serving loop: `announce` returns once the events are in a sent
    message (or, after two failed tries, given up on: hubs then catch up from the replay
    buffer within a heartbeat tick)."""

    def __init__(self, layer) -> None:
        self.layer = layer
        self.loop = asyncio.get_running_loop()
        # Per tenant, while its sender runs: the events waiting for the next message, and the
        # futures of the publishes they came from.
        self._waiting: dict[int, list[tuple[list[Envelope], asyncio.Future]]] = {}
        self._senders: set[asyncio.Task] = set()

    async def announce(self, tenant_id: int, envelopes: list[Envelope]) -> None:
        done = self.loop.create_future()
        waiting = self._waiting.get(tenant_id)
        if waiting is None:
            waiting = self._waiting[tenant_id] = []
            # A task of its own: a publisher cancelled while waiting stops no one else's send.
            task = self.loop.create_task(self._send_all(tenant_id))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)
        waiting.append((envelopes, done))
        await done

    async def _send_all(self, tenant_id: int) -> None:
        batch: list[tuple[list[Envelope], asyncio.Future]] = []
        try:
            while batch := self._waiting[tenant_id]:
                self._waiting[tenant_id] = []
                events = sorted((e for envelopes, _ in batch for e in envelopes), key=_seq)
                for start in range(0, len(events), MAX_EVENTS_PER_MESSAGE):
                    await self._send(tenant_id, events[start : start + MAX_EVENTS_PER_MESSAGE])
                _release(batch)
        finally:
            # Cancelled at shutdown, or failed: the events are sequenced and logged, hubs catch
            # up; their publishers must get their answer (a publish left hanging is retried by
            # its client, and published twice).
            _release(batch)
            _release(self._waiting.pop(tenant_id, []))

    async def _send(self, tenant_id: int, events: list[Envelope]) -> None:
        message = published_message(tenant_id, events)
        for attempt in (1, 2):
            try:
                await self.layer.group_send(tenant_group(tenant_id), message)
                return
            except Exception:
                # A connection broken by a Redis restart fails once, then reconnects. The
                # events are sequenced and logged already; if both tries fail, hubs catch up
                # from the replay buffer within a heartbeat tick.
                if attempt == 2:
                    logger.exception("group_send failed for tenant %s", tenant_id)

    def close(self) -> None:
        """Called when the engine closes: senders still running stop."""
        for task in list(self._senders):
            task.cancel()


def _seq(envelope: Envelope) -> int:
    return envelope.seq


def _release(batch: list[tuple[list[Envelope], asyncio.Future]]) -> None:
    for _, done in batch:
        if not done.done():
            done.set_result(None)
