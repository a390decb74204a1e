"""Provides the Envelope: one accepted event, with its wire frame encoded exactly once."""

import json
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# ASCII-only output: a lone surrogate in the input cannot break the UTF-8 encoding later.
# Strict JSON: NaN and the infinities (`1e400` parses as one) raise ValueError, as in DRF.
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def data_encode(data: Any) -> str:
    """The compact JSON of an event's data, as sized against EVENTHUB_MAX_EVENT_BYTES; raises
    ValueError for what JSON cannot hold (NaN, infinities)."""
    return _dumps(data)


_ALPHABET = string.ascii_lowercase + string.digits


def epoch_new() -> str:
    """A tag that keeps ids unique across restarts: a restart re-seeds seq from the log and gets
    a new epoch, so an id handed out before a crash can never name a different event."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(6))


def event_id_format(seq: int, epoch: str) -> str:
    return f"{seq}-{epoch}"


def event_id_parse(event_id: str) -> tuple[int, str] | None:
    """Returns (seq, epoch) of an id made by event_id_format, or None when it is not one."""
    seq_text, sep, epoch = event_id.partition("-")
    # isascii() first: isdigit() alone admits digits such as "²" that int() refuses.
    if not (sep and seq_text.isascii() and epoch.isascii()):
        return None
    if not seq_text.isdigit() or len(seq_text) > 18 or not epoch.isalnum():
        return None
    return int(seq_text), epoch


@dataclass(frozen=True, slots=True)
class Envelope:
    tenant_id: int
    seq: int
    id: str
    topic: str
    type: str
    data_json: str
    received_at: datetime
    frame: str  # the event JSON sent to subscribers, the same on both transports

    @property
    def epoch(self) -> str:
        """The run of seqs the event belongs to (a re-seeded sequence starts a new one)."""
        return self.id.partition("-")[2]

    @classmethod
    def build(
        cls,
        *,
        tenant_id: int,
        seq: int,
        epoch: str,
        topic: str,
        type: str,
        data_json: str,
        received_at: datetime,
    ) -> "Envelope":
        event_id = event_id_format(seq, epoch)
        ts = received_at.isoformat().replace("+00:00", "Z")
        frame = (
            f'{{"type":"event","id":{_dumps(event_id)},"seq":{seq},"topic":{_dumps(topic)},'
            f'"event":{_dumps(type)},"data":{data_json},"ts":"{ts}"}}'
        )
        return cls(tenant_id, seq, event_id, topic, type, data_json, received_at, frame)

    @property
    def data(self) -> Any:
        return json.loads(self.data_json)

    def sse_bytes(self) -> bytes:
        return f"id: {self.id}\nevent: {self.type}\ndata: {self.frame}\n\n".encode()

    def to_wire(self) -> list:
        """The compact form carried by the channel layer and the persistence queue."""
        return [
            self.seq,
            self.id,
            self.topic,
            self.type,
            self.data_json,
            self.received_at.timestamp(),
            self.frame,
        ]

    @classmethod
    def from_wire(cls, tenant_id: int, wire: list) -> "Envelope":
        seq, event_id, topic, type_, data_json, ts, frame = wire
        received_at = datetime.fromtimestamp(ts, UTC)
        return cls(tenant_id, seq, event_id, topic, type_, data_json, received_at, frame)
