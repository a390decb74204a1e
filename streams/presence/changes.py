"""Provides what presence reports: a change (join, leave, occupied, vacated) and its layer
message, which every hub with a connection of the tenant receives."""

from dataclasses import dataclass
from typing import Any

PRESENCE_CHANGED = "presence.changed"

# The entry keys of connections that list no user: anonymous ones, and those beyond a cap.
ANONYMOUS = ""
UNLISTED = "\x00"  # never a user: tokens refuse control characters in `user`

JOIN, LEAVE, OCCUPIED, VACATED = "join", "leave", "occupied", "vacated"


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # JOIN, LEAVE (a user), OCCUPIED, VACATED (the topic)
    tenant_id: int
    topic: str
    user: str | None = None
    info: dict[str, Any] | None = None

    def frame(self) -> dict:
        """The frame a subscriber that asked for presence gets (join and leave only)."""
        frame: dict[str, Any] = {"type": self.kind, "topic": self.topic, "user": self.user}
        if self.kind == JOIN:
            frame["info"] = self.info or {}
        return frame


def presence_message(change: Change) -> dict:
    return {
        "type": PRESENCE_CHANGED,
        "tenant": change.tenant_id,
        "kind": change.kind,
        "topic": change.topic,
        "user": change.user,
        "info": change.info,
    }


def presence_change(message: dict) -> Change | None:
    """The Change of a `presence.changed` message; None for any other message."""
    if message.get("type") != PRESENCE_CHANGED:
        return None
    return Change(
        kind=str(message["kind"]),
        tenant_id=int(message["tenant"]),
        topic=str(message["topic"]),
        user=message.get("user"),
        info=message.get("info"),
    )
