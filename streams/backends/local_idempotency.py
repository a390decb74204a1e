"""Provides the embedded engine's Idempotency-Key store: per tenant, bounded in memory, and
backed by the database table the log writer keeps, so that a key is answered for its whole
24 hours however many keys a tenant sends.

Each tenant has its own store, so one tenant's keys never evict another's. In a store:
- `fresh` holds keys whose request is running, or answered but whose record the log writer has
  not written yet: they are never evicted, since the database could not answer for them;
- `durable` holds keys whose record is in the database too, oldest first: beyond the tenant's
  caps the oldest is dropped (`popitem`, O(1)), and from then on, until that key would have
  expired, a key missing from memory is looked up in the database.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from channels.db import database_sync_to_async
from django.db import DatabaseError

from streams.backends import HubUnavailable

# Per tenant, in memory: keys, and characters of stored responses (a batch's is up to ~200 kB).
TENANT_MAX_KEYS = 10_000
TENANT_MAX_BYTES = 4 * 1024 * 1024
# Database look-ups of one tenant at a time: its misses never hold every worker thread.
TENANT_MAX_LOOKUPS = 2
# Read at start-up, over every tenant (each tenant within its own caps as well).
LOAD_MAX_KEYS = 100_000
LOAD_MAX_BYTES = 64 * 1024 * 1024

# (tenant, slot, fingerprint, response, seconds left, the tenant's unexpired rows in all)
LiveRow = tuple[int, str, str, str, float, int]


class _Entry:
    __slots__ = ("expires", "fingerprint", "response")

    def __init__(self, fingerprint: str, response: str | None, expires: float) -> None:
        self.fingerprint = fingerprint
        self.response = response
        self.expires = expires


class _TenantKeys:
    __slots__ = ("durable", "fresh", "incomplete_until", "lookups", "size")

    def __init__(self) -> None:
        self.fresh: dict[str, _Entry] = {}
        self.durable: OrderedDict[str, _Entry] = OrderedDict()
        self.size = 0  # characters of the responses held, fresh and durable
        # Until then (monotonic) a key of this tenant may be in the database and not here.
        self.incomplete_until = 0.0
        self.lookups: asyncio.Semaphore | None = None

    def count(self) -> int:
        return len(self.fresh) + len(self.durable)

    def get(self, slot: str, now: float) -> _Entry | None:
        """The live entry of `slot`; an expired one met here is dropped."""
        entry = self.fresh.get(slot)
        held = self.fresh
        if entry is None:
            entry = self.durable.get(slot)
            held = self.durable
        if entry is None or entry.expires > now:
            return entry
        del held[slot]
        self.size -= len(entry.response or "")
        return None

    def drop_expired(self, now: float) -> None:
        """Drops expired keys from the old end; each is dropped once, so O(1) per key."""
        while self.durable:
            slot, entry = next(iter(self.durable.items()))
            if entry.expires > now:
                return
            del self.durable[slot]
            self.size -= len(entry.response or "")

    def evict(self, now: float) -> None:
        """Forgets the oldest durable keys while over the tenant's caps."""
        while self.durable and (self.count() > TENANT_MAX_KEYS or self.size > TENANT_MAX_BYTES):
            _, entry = self.durable.popitem(last=False)
            self.size -= len(entry.response or "")
            if entry.expires > now:
                # Its retry is promised an answer until then: the database has to give it.
                self.incomplete_until = max(self.incomplete_until, entry.expires)


def _plan_load(rows: Iterable[LiveRow]) -> tuple[list[LiveRow], dict[int, float], float | None]:
    """What of the database to hold: (rows, newest first; per tenant, seconds during which a
    key may have been left out; seconds during which any tenant's key may have been)."""
    kept: list[LiveRow] = []
    size = 0
    counts: dict[int, int] = {}
    live: dict[int, int] = {}
    oldest: dict[int, float] = {}
    beyond: float | None = None
    for row in rows:
        tenant_id, _, _, response, left, tenant_live = row
        if len(kept) >= LOAD_MAX_KEYS or size + len(response) > LOAD_MAX_BYTES:
            # Rows come newest first: none of those left unread expires later than this one.
            beyond = left
            break
        kept.append(row)
        size += len(response)
        counts[tenant_id] = counts.get(tenant_id, 0) + 1
        live[tenant_id] = tenant_live
        oldest[tenant_id] = left
    # A tenant's rows left out by its own caps are older than every one of its rows kept.
    incomplete = {t: oldest[t] for t, n in counts.items() if n < live[t]}
    return kept, incomplete, beyond


class IdempotencyStore:
    """Lives on the serving event loop; every method runs there.

    `live_rows(max_rows_per_tenant=, max_bytes_per_tenant=)` and `live_row(tenant_id=, slot=)`
    read the database (`streams.log.reads`); they are run in worker threads.
    """

    def __init__(
        self,
        *,
        live_rows: Callable[..., Iterable[LiveRow]],
        live_row: Callable[..., tuple[str, str, float] | None],
    ) -> None:
        self._live_rows = live_rows
        self._read_start = database_sync_to_async(self._read_start_sync, thread_sensitive=False)
        self._read_one = database_sync_to_async(live_row, thread_sensitive=False)
        self._tenants: dict[int, _TenantKeys] = {}
        self._loaded = False
        self._load_lock = asyncio.Lock()
        # Until then (monotonic) any tenant's key may be in the database and not here.
        self._incomplete_until = 0.0

    def _tenant(self, tenant_id: int) -> _TenantKeys:
        keys = self._tenants.get(tenant_id)
        if keys is None:
            keys = self._tenants[tenant_id] = _TenantKeys()
        return keys

    def _read_start_sync(self):
        # In a worker thread: reads rows only as far as the load's caps, touches no state.
        return _plan_load(
            self._live_rows(
                max_rows_per_tenant=TENANT_MAX_KEYS, max_bytes_per_tenant=TENANT_MAX_BYTES
            )
        )

    async def _load(self) -> None:
        """Holds the keys answered before this process started; awaited by the first claim."""
        async with self._load_lock:
            if self._loaded:
                return
            try:
                rows, incomplete, beyond = await self._read_start()
            except DatabaseError as exc:
                raise HubUnavailable(f"idempotency keys unreadable: {exc}") from exc
            now = time.monotonic()
            for tenant_id, slot, fingerprint, response, left, _ in reversed(rows):
                keys = self._tenant(tenant_id)
                keys.durable[slot] = _Entry(fingerprint, response, now + left)
                keys.size += len(response)
            for tenant_id, left in incomplete.items():
                self._tenant(tenant_id).incomplete_until = now + left
            if beyond is not None:
                self._incomplete_until = now + beyond
            self._loaded = True

    async def claim(
        self, tenant_id: int, slot: str, fingerprint: str, ttl: float
    ) -> tuple[str, str | None] | None:
        """Claims a key for this request (None), or returns (fingerprint, response) of the
        request that holds it (response None while that one is running). Called before a
        publish with an Idempotency-Key; may read the database (never for a tenant whose keys
        are all in memory). Raises HubUnavailable when the database cannot answer."""
        if not self._loaded:
            await self._load()
        now = time.monotonic()
        keys = self._tenant(tenant_id)
        keys.drop_expired(now)
        entry = keys.get(slot, now)
        if entry is None and now < max(keys.incomplete_until, self._incomplete_until):
            entry = await self._look_up(keys, tenant_id, slot)
            now = time.monotonic()
        if entry is not None:
            return entry.fingerprint, entry.response
        keys.fresh[slot] = _Entry(fingerprint, None, now + ttl)
        keys.evict(now)
        return None

    async def _look_up(self, keys: _TenantKeys, tenant_id: int, slot: str) -> _Entry | None:
        if keys.lookups is None:
            keys.lookups = asyncio.Semaphore(TENANT_MAX_LOOKUPS)
        async with keys.lookups:
            try:
                row = await self._read_one(tenant_id=tenant_id, slot=slot)
            except DatabaseError as exc:
                raise HubUnavailable(f"idempotency key unreadable: {exc}") from exc
        now = time.monotonic()
        # Another request may have claimed the key while this one waited: it wins.
        entry = keys.get(slot, now)
        if entry is not None or row is None:
            return entry
        fingerprint, response, left = row
        entry = keys.durable[slot] = _Entry(fingerprint, response, now + left)
        keys.size += len(response)
        keys.evict(now)
        return entry

    def save(self, tenant_id: int, slot: str, fingerprint: str, response: str, ttl: float) -> None:
        """Holds the first response of a key; called when its publish was answered. The key
        stays fresh (never evicted) until `written` says its record is in the database."""
        now = time.monotonic()
        keys = self._tenant(tenant_id)
        old = keys.fresh.pop(slot, None) or keys.durable.pop(slot, None)
        if old is not None:
            keys.size -= len(old.response or "")
        keys.fresh[slot] = _Entry(fingerprint, response, now + ttl)
        keys.size += len(response)
        keys.evict(now)

    def release(self, tenant_id: int, slot: str) -> None:
        """Gives up a claim; called when its publish failed, so a retry may run it again."""
        keys = self._tenants.get(tenant_id)
        if keys is None:
            return
        entry = keys.fresh.get(slot)
        if entry is not None and entry.response is None:
            del keys.fresh[slot]

    def written(self, records: Sequence) -> None:
        """Lets memory forget keys whose records (with `tenant_id` and `slot`) are now in the
        database; called by the log writer once it committed them."""
        now = time.monotonic()
        for record in records:
            keys = self._tenants.get(record.tenant_id)
            if keys is None:
                continue
            entry = keys.fresh.get(record.slot)
            if entry is not None and entry.response is not None:
                del keys.fresh[record.slot]
                keys.durable[record.slot] = entry
                keys.evict(now)

    def held(self, tenant_id: int) -> int:
        """How many keys of the tenant are in memory (for stats and tests)."""
        keys = self._tenants.get(tenant_id)
        return keys.count() if keys is not None else 0
