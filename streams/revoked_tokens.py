"""Provides the process's view of revoked subscriber tokens: the ids revoked within the last day
(no token lives longer), held in memory and brought up to date from the database every few
seconds, so that admitting a connection with a token costs no query."""

import asyncio
import contextvars
import logging
import threading
import time
import weakref
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from streams.models import RevokedToken

TOKEN_MAX_TTL = 86400  # seconds: the longest a token lives (POST /api/v1/tokens `ttl`)
# Each read goes this far back before the previous one: a row is committed a little after its
# `revoked_at` was taken, and another machine's clock may be a little off this one's.
_OVERLAP = timedelta(seconds=60)
_KEEP = timedelta(seconds=TOKEN_MAX_TTL) + _OVERLAP

logger = logging.getLogger(__name__)


class RevokedTokens:
    """The revoked token ids this process knows of, with when each was revoked."""

    def __init__(self) -> None:
        self._revoked: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._read_from: datetime | None = None  # where the next read starts
        self._synced_at: float | None = None  # time.monotonic() of the last read

    def __contains__(self, token_id: object) -> bool:
        return token_id in self._revoked

    def __len__(self) -> int:
        return len(self._revoked)

    def remember(self, token_id: str, revoked_at: datetime) -> None:
        """Notes a revocation made by this process, in effect here at once (others read it at
        their next `sync`)."""
        with self._lock:
            self._revoked[token_id] = revoked_at

    def stale(self) -> bool:
        """True when the last read is older than EVENTHUB_KEY_CACHE_SECONDS (or there was none),
        the same staleness a revoked API key may have in another process."""
        synced = self._synced_at
        return synced is None or time.monotonic() - synced > settings.EVENTHUB_KEY_CACHE_SECONDS

    def sync(self) -> None:
        """Reads the revocations written since the last read (the whole last day the first
        time) and forgets those old enough that their tokens have expired. Runs in a thread
        (database_sync_to_async): by the hub's supervisor every few seconds, and by a connect
        when the last read is stale."""
        now = timezone.now()
        read_from = self._read_from or now - _KEEP
        rows = (
            RevokedToken.objects.filter(revoked_at__gte=read_from)
            .order_by("revoked_at")
            .values_list("token_id", "revoked_at")
        )
        with self._lock:
            self._revoked.update(rows)
            # Oldest first, as they were revoked (near enough): the walk stops at the first
            # one still kept, and does not visit every id each time.
            oldest = now - _KEEP
            while self._revoked:
                token_id, at = next(iter(self._revoked.items()))
                if at >= oldest:
                    break
                del self._revoked[token_id]
            self._read_from = now - _OVERLAP
            self._synced_at = time.monotonic()

    def clear(self) -> None:
        """Forgets everything (tests, and a database swapped under a running process)."""
        with self._lock:
            self._revoked.clear()
            self._read_from = self._synced_at = None


revoked_tokens = RevokedTokens()
# Looked up at each call, so that a test (or a subclass) may replace `sync`.
_sync = database_sync_to_async(lambda: revoked_tokens.sync())
_reading: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = (
    weakref.WeakKeyDictionary()
)


async def _read_once() -> None:
    """Reads the revocations, one read at a time per loop: a crowd of connects that finds the
    view stale (after a quiet spell, or at start) waits for one query, not one each."""
    loop = asyncio.get_running_loop()
    task = _reading.get(loop)
    if task is None or task.done():
        # In a context of its own: the consumer that started it may end before it does.
        task = loop.create_task(_sync(), context=contextvars.Context())
        _reading[loop] = task
    await asyncio.shield(task)


async def atoken_revoked(token_id: str) -> bool:
    """Whether a token id was revoked, as this process knows it (read again first when stale;
    when the database cannot answer, as it was last read, and the layer told it since)."""
    if revoked_tokens.stale():
        try:
            await _read_once()
        except DatabaseError as error:
            logger.warning("could not read token revocations (%s); using what is known", error)
    return token_id in revoked_tokens


async def arevoked_tokens_sync() -> None:
    """Brings the process's view up to date; the supervisor's re-check calls it."""
    await _read_once()
