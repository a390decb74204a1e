"""Provides the publishing front of the streams app: events accepted for a tenant are sequenced
and fanned out by the running process's engine and hub. The log's own writes are in
`streams.log.writes`."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils import timezone

from streams import runtime
from streams.envelope import Envelope


@dataclass(frozen=True, slots=True)
class EventInput:
    topic: str
    type: str
    data_json: str  # already encoded and size-checked by the caller


async def events_accept(
    *, tenant_id: int, events: Sequence[EventInput], rate: int | None = None
) -> list[Envelope]:
    """Accepts checked events for a tenant: sequences them, fans them out and hands them to the
    log, in one step of the engine. Called by `publishing.publish_request` on the event loop.

    Writes nothing to the database. Raises RateLimited when the tenant's `rate` (events/s) is
    spent, HubUnavailable when the shared state (Redis) cannot be reached; then nothing was
    accepted.
    """
    items = [(e.topic, e.type, e.data_json) for e in events]
    await runtime.get_hub().start()
    return await runtime.get_backend().publish(tenant_id, items, timezone.now(), rate)
