"""Provides the contract of an engine: what the hub, the services, replay and the health checks
may use of the shared state, whichever engine keeps it (`streams.backends`, whose docstring
says what each method does). Low in the layers, so that the hub can name it without importing
an engine."""

import asyncio
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Protocol

from streams.envelope import Envelope
from webhooks.notices import WebhookNotice


class Engine(Protocol):
    """The contract of an engine (`streams.backends` says what each method does).

    Made on first use by `streams.runtime.get_backend`, bound to the event loop that serves
    the process; every coroutine runs on that loop.
    """

    loop: asyncio.AbstractEventLoop
    layer: Any  # the channel layer events travel on (channels' BaseChannelLayer)

    def start(self) -> None: ...

    async def close(self) -> None: ...

    async def webhook_notice(self, notice: WebhookNotice) -> None: ...

    async def publish(
        self,
        tenant_id: int,
        items: Sequence[tuple[str, str, str]],
        received_at: datetime,
        rate: int | None = None,
    ) -> list[Envelope]: ...

    async def rate_wait(self, *, tenant_id: int, rate: int) -> float: ...

    async def buffered(
        self, tenant_id: int, from_seq: int, to_seq: int | None = None
    ) -> list[Envelope]: ...

    async def buffered_size(
        self, tenant_id: int, from_seq: int, to_seq: int, patterns: Sequence[str]
    ) -> tuple[int, int, int]: ...

    async def buffered_page(
        self, tenant_id: int, from_seq: int, to_seq: int, max_events: int, max_bytes: int
    ) -> list[Envelope]: ...

    async def current_seq(self, tenant_id: int) -> int: ...

    async def changed_seqs(
        self, tenant_ids: Collection[int], since: object
    ) -> tuple[object, dict[int, int]]:
        """The current seq of each of `tenant_ids` whose sequence may have moved since the
        read whose cursor is `since` (what this returned then; None: all of them), and the
        cursor of this read: a hub's catch-up reads what changed, not every tenant it holds,
        each tick."""
        ...

    async def current_epoch(self, tenant_id: int) -> str | None: ...

    async def stats(self, tenant_id: int) -> dict: ...

    async def log_backlog(self) -> tuple[int, float]:
        """(events accepted but not yet in the log, age in seconds of the oldest of them), over
        every tenant and, with Redis, every process: what /metrics reports on each process.
        May raise when the shared state cannot be reached."""
        ...

    def count_delivered(self, tenant_id: int, n: int) -> None: ...

    async def connection_acquire(
        self, tenant_id: int, transport: str, limit: int, local: dict[str, int]
    ) -> bool: ...

    async def connection_change(self, tenant_id: int, transport: str, delta: int) -> None: ...

    async def connections(self, tenant_id: int, local: dict[str, int]) -> dict[str, int]: ...

    async def idempotency_claim(
        self, tenant_id: int, slot: str, fingerprint: str, ttl: float
    ) -> tuple[str, str | None] | None: ...

    async def idempotency_save(
        self, tenant_id: int, slot: str, fingerprint: str, response: str, ttl: float
    ) -> None: ...

    async def idempotency_release(self, tenant_id: int, slot: str) -> None: ...
