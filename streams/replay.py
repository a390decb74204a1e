"""Provides replay: the events a reconnecting subscriber missed, from the replay buffer or the
persisted log."""

from channels.db import database_sync_to_async
from django.conf import settings

from streams import runtime
from streams.envelope import Envelope, data_encode, event_id_parse
from streams.models import Event
from streams.topics import pattern_matches


def _matching(envelopes: list[Envelope], patterns: tuple[str, ...]) -> list[Envelope]:
    if "*" in patterns:
        return envelopes
    return [e for e in envelopes if any(pattern_matches(p, e.topic) for p in patterns)]


def _from_log(tenant_id: int, last_seq: int, last_id: str, limit: int) -> list[Envelope] | None:
    """Events after last_seq from the log, or None when last_id is not (or no more) in it."""
    anchor = Event.objects.filter(tenant_id=tenant_id, seq=last_seq).values_list(
        "event_id", flat=True
    )
    if list(anchor) != [last_id]:
        return None
    rows = Event.objects.filter(tenant_id=tenant_id, seq__gt=last_seq).order_by("seq")[:limit]
    return [
        Envelope.build(
            tenant_id=tenant_id,
            seq=row.seq,
            epoch=row.event_id.partition("-")[2],
            topic=row.topic,
            type=row.type,
            data_json=data_encode(row.data),
            received_at=row.received_at,
        )
        for row in rows
    ]


async def events_after(
    *, tenant_id: int, last_event_id: str, patterns: tuple[str, ...]
) -> tuple[bool, list[Envelope], int]:
    """Returns (recovered, events to replay in order, seq the connection has now seen).

    `recovered` is False when the id names no event still known, or more than
    EVENTHUB_REPLAY_MAX events were missed; then nothing is replayed.
    """
    parsed = event_id_parse(last_event_id)
    assert parsed is not None, "validated by the caller"
    last_seq = parsed[0]
    replay_max = settings.EVENTHUB_REPLAY_MAX
    backend = runtime.get_backend()
    # Read after the connection joined the hub: whatever is published from here on reaches
    # it live, and duplicates between the two are dropped by seq.
    buffered = await backend.buffered(tenant_id, last_seq)
    if buffered and buffered[0].seq == last_seq:
        missed = buffered[1:]
        if buffered[0].id != last_event_id or len(missed) > replay_max:
            return False, [], 0
        return True, _matching(missed, patterns), buffered[-1].seq
    from_log = await database_sync_to_async(_from_log)(
        tenant_id, last_seq, last_event_id, replay_max + 1
    )
    if from_log is None:
        return False, [], 0
    # The log lags behind the buffer: the buffer supplies what is not written yet.
    newest = from_log[-1].seq if from_log else last_seq
    missed = from_log + await backend.buffered(tenant_id, newest + 1)
    if len(missed) > replay_max or (missed and missed[-1].seq - last_seq != len(missed)):
        return False, [], 0
    return True, _matching(missed, patterns), (missed[-1].seq if missed else last_seq)
