"""Provides the one message the channel layer carries, `event.published`: built by the engines
when they accept events, read by each process's hub. One message per process per publish; its
events travel in the compact form of `Envelope.to_wire`, frames already encoded."""

from collections.abc import Sequence

from streams.envelope import Envelope

EVENT_PUBLISHED = "event.published"


def published_message(tenant_id: int, envelopes: Sequence[Envelope]) -> dict:
    """The layer message announcing a tenant's accepted events, in seq order."""
    return {
        "type": EVENT_PUBLISHED,
        "tenant": tenant_id,
        "events": [e.to_wire() for e in envelopes],
    }


def published_envelopes(message: dict) -> tuple[int, list[Envelope]] | None:
    """(tenant, events) of an `event.published` message; None for any other message. Raises
    on a malformed one (the hub logs it and goes on)."""
    if message.get("type") != EVENT_PUBLISHED:
        return None
    tenant_id = message["tenant"]
    return tenant_id, [Envelope.from_wire(tenant_id, wire) for wire in message["events"]]
