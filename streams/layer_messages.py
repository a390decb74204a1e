"""Provides the messages the channel layer carries to each process's hub: `event.published`,
built by the engines when they accept events (one message per process per publish; its events
travel in the compact form of `Envelope.to_wire`, frames already encoded), and
`token.revoked`, sent to every hub when a subscriber token is revoked."""

from collections.abc import Sequence

from streams.envelope import Envelope

EVENT_PUBLISHED = "event.published"
TOKEN_REVOKED = "token.revoked"


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


def token_revoked_message(tenant_id: int, token_id: str, revoked_at: float) -> dict:
    """The layer message telling every hub that a tenant's token was revoked (a UNIX time)."""
    return {"type": TOKEN_REVOKED, "tenant": tenant_id, "token": token_id, "at": revoked_at}


def revoked_token(message: dict) -> tuple[int, str, float] | None:
    """(tenant, token id, when) of a `token.revoked` message; None for any other message."""
    if message.get("type") != TOKEN_REVOKED:
        return None
    return int(message["tenant"]), str(message["token"]), float(message["at"])
