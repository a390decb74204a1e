"""Provides per-tenant sequencing: each accepted event gets the next `seq` of its tenant and
goes into the tenant's bounded replay buffer in the same step."""

import secrets
import string
import threading
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime

from django.conf import settings

from streams.envelope import Envelope

_ALPHABET = string.ascii_lowercase + string.digits


def epoch_new() -> str:
    """A tag that makes ids unique across restarts: a restart re-seeds seq from the log and
    gets a new epoch, so an id handed out before a crash can never name a different event."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(6))


class _TenantSequence:
    __slots__ = ("buffer", "epoch", "last_seq")

    def __init__(self, last_seq: int, window: int) -> None:
        self.last_seq = last_seq
        self.epoch = epoch_new()
        self.buffer: deque[Envelope] = deque(maxlen=window)


class LocalSequencer:
    """The embedded sequencer: one process owns every tenant's sequence and replay buffer.

    `seed` returns the highest seq already in the persisted log; it runs once per tenant per
    process, the only database read on the publish path.
    """

    def __init__(self, seed: Callable[[int], int], window: int | None = None) -> None:
        self._seed = seed
        self._window = window or settings.EVENTHUB_REPLAY_WINDOW
        self._tenants: dict[int, _TenantSequence] = {}
        self.lock = threading.Lock()

    def _sequence(self, tenant_id: int) -> _TenantSequence:
        seq = self._tenants.get(tenant_id)
        if seq is None:
            seq = self._tenants[tenant_id] = _TenantSequence(self._seed(tenant_id), self._window)
        return seq

    def assign(
        self,
        *,
        tenant_id: int,
        items: Sequence[tuple[str, str, str]],
        received_at: datetime,
    ) -> list[Envelope]:
        """Sequences (topic, type, data_json) items in order; the caller holds `lock` until it
        has handed them on, so that hand-off order is seq order."""
        state = self._sequence(tenant_id)
        envelopes = []
        for topic, type_, data_json in items:
            state.last_seq += 1
            envelopes.append(
                Envelope.build(
                    tenant_id=tenant_id,
                    seq=state.last_seq,
                    epoch=state.epoch,
                    topic=topic,
                    type=type_,
                    data_json=data_json,
                    received_at=received_at,
                )
            )
        state.buffer.extend(envelopes)
        return envelopes

    def buffered(self, tenant_id: int) -> list[Envelope]:
        """A snapshot of the tenant's replay buffer, oldest first."""
        state = self._tenants.get(tenant_id)
        return list(state.buffer) if state else []
