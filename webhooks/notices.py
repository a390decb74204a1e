"""Provides the notice of a presence or occupancy change on its way to the webhook deliveries:
made by the process whose tracker saw the change, carried by the log queue or stream."""

import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

_dumps = json.JSONEncoder(separators=(",", ":")).encode

PRESENCE_KINDS = {
    "join": "presence",
    "leave": "presence",
    "occupied": "occupancy",
    "vacated": "occupancy",
}


@dataclass(frozen=True, slots=True)
class WebhookNotice:
    tenant_id: int
    msg_id: str  # the webhook-id: made once, so a notice written twice is delivered once
    type: str  # join, leave, occupied, vacated
    topic: str
    user: str | None
    info: dict[str, Any] | None
    ts: str

    @classmethod
    def build(
        cls,
        *,
        tenant_id: int,
        type: str,
        topic: str,
        user: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> "WebhookNotice":
        ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        msg_id = "msg_" + secrets.token_urlsafe(18)
        return cls(tenant_id, msg_id, type, topic, user, info, ts)

    @property
    def kind(self) -> str:
        """The endpoint kind that gets it: presence or occupancy."""
        return PRESENCE_KINDS[self.type]

    def body(self) -> str:
        """The JSON POSTed: `{"type", "topic", "user", "ts"}` (join adds info) for presence,
        `{"type", "topic", "ts"}` for occupancy."""
        body: dict[str, Any] = {"type": self.type, "topic": self.topic}
        if self.kind == "presence":
            body["user"] = self.user
            if self.type == "join":
                body["info"] = self.info or {}
        body["ts"] = self.ts
        return _dumps(body)

    def to_json(self) -> str:
        return _dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> "WebhookNotice":
        return cls(**json.loads(text))
