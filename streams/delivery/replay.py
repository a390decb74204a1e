"""Provides replay: the events a reconnecting subscriber missed, from the replay buffer or the
persisted log.

What a reconnect replays is decided before anything is sent (how many events, how many bytes,
from where), without reading one of them; then it is streamed a page at a time, each page read
once the client has taken the one before, so that no gap is ever held in memory whole.

Over 300 lines: the plan, the paging and the paced sending are one protocol (what the plan
promised is what the pages send), easier to check in one file.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import ParamSpec, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import OperationalError

from streams import runtime
from streams.delivery.subscribers import Frames, Subscriber
from streams.envelope import Envelope, event_id_parse
from streams.log.reads import event_log_count, event_log_has, event_log_page, event_log_span
from streams.topics import patterns_matcher

logger = logging.getLogger(__name__)

# One page: as many events as fit in about PAGE_BYTES of event JSON, at most PAGE_EVENTS.
PAGE_EVENTS = 200
PAGE_BYTES = 256 * 1024
# Seqs of the log one aggregate query sizes: a gap over the budget stops being sized soon.
SPAN_SEQS = 2000
# How long the wait for a client to read sleeps between looks at its backlog (seconds).
DRAIN_POLL_FIRST, DRAIN_POLL_MOST = 0.002, 0.05
SLOW_CONSUMER = 4008
SLOW_REASON = "slow consumer: reconnect with your last id"
# Threads that read the log for replays. Not the process's shared sync thread, where every
# tenant's API key look-ups run: a replay storm would queue in front of them.
READ_THREADS = 2

_P = ParamSpec("_P")
_R = TypeVar("_R")


LOCKED_RETRIES = 5


class TenantReads:
    """Runs replays' log reads on threads of their own, one read of a tenant at a time: a
    tenant whose subscribers all reconnect at once waits for its own reads, while another
    tenant's replay, and the process's other database work, go on beside it.

    A read holds its tenant's turn only while it runs, never while the client takes the page,
    so a client that stops reading holds nothing up. Turns of tenants with no read running or
    waiting are dropped.
    """

    def __init__(self, threads: int = READ_THREADS) -> None:
        self._threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="eventhub-replay")
        self._turns: dict[int, tuple[asyncio.Lock, int]] = {}

    async def __call__(
        self, tenant_id: int, read: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        lock, users = self._turns.get(tenant_id) or (asyncio.Lock(), 0)
        self._turns[tenant_id] = (lock, users + 1)
        try:
            async with lock:
                run = database_sync_to_async(read, thread_sensitive=False, executor=self._executor)
                for attempt in range(LOCKED_RETRIES):
                    try:
                        return await run(*args, **kwargs)
                    except OperationalError as error:
                        # SQLite's shared cache (the test database; file databases wait on
                        # their busy timeout instead) refuses a read while the log writer
                        # holds the table: a moment later it succeeds.
                        if "locked" not in str(error) or attempt == LOCKED_RETRIES - 1:
                            raise
                        await asyncio.sleep(0.02 * 2**attempt)
                raise AssertionError("unreachable: the last attempt returns or raises")
        finally:
            lock, users = self._turns[tenant_id]
            if users == 1:
                del self._turns[tenant_id]
            else:
                self._turns[tenant_id] = (lock, users - 1)

    def wait_idle(self, timeout: float) -> None:
        """Blocks until every read under way is done: each thread then takes a part of a
        barrier, which holds until all of them have. For a caller on another thread whose event
        loop may be gone (a test's teardown, before the database is flushed)."""
        barrier = threading.Barrier(self._threads)
        parts = [self._executor.submit(barrier.wait, timeout) for _ in range(self._threads)]
        for part in parts:
            part.result(timeout)

    def tenants_reading(self) -> int:
        """Tenants with a read running or waiting (the turns held in memory)."""
        return len(self._turns)


log_reads = TenantReads()


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """What one reconnect replays: the events with `after < seq <= until` that its patterns
    match, those up to `log_until` from the log, the others from the replay buffer. Nothing
    when `recovered` is False."""

    recovered: bool
    tenant_id: int = 0
    patterns: tuple[str, ...] = ()
    after: int = 0
    until: int = 0
    log_until: int = 0
    epoch: str | None = None  # of the newest event replayed
    size: int = 0  # about the bytes of event JSON sent
    log_events: int = 0  # of them from the log (their mean size shapes the first page)
    log_size: int = 0


NOT_RECOVERED = ReplayPlan(recovered=False)


class ReplayInterrupted(Exception):
    """Raised when planned events are gone from the buffer before they were sent (the client
    read slower than the tenant published) and the log does not hold them (yet)."""


def _matching(envelopes: list[Envelope], patterns: tuple[str, ...]) -> list[Envelope]:
    if "*" in patterns:
        return envelopes
    matches = patterns_matcher(patterns)
    return [e for e in envelopes if matches(e.topic)]


def _log_span(
    tenant_id: int, after: int, after_id: str, last: int, patterns: tuple[str, ...], budget: int
) -> tuple[int, int, int] | None:
    """(events held, matched, their bytes) of the log after `after` up to `last`, or None when
    the log does not hold `after_id` there; stops sizing once past `budget`."""
    if not event_log_has(tenant_id=tenant_id, seq=after, event_id=after_id):
        return None
    held = matched = size = 0
    low = after + 1
    while low <= last and size <= budget:
        high = min(last, low + SPAN_SEQS - 1)
        span = event_log_span(tenant_id=tenant_id, first_seq=low, last_seq=high, patterns=patterns)
        held, matched, size = held + span[0], matched + span[1], size + span[2]
        low = high + 1
    return held, matched, size


async def replay_plan(
    *, tenant_id: int, last_event_id: str, patterns: tuple[str, ...]
) -> ReplayPlan:
    """Decides what a reconnect replays; called after the connection joined the hub (so that
    whatever is published from then on reaches it live, duplicates dropped by seq) and before
    its welcome, which says whether it recovered.

    Not recovered when the id names no event still known, or more than EVENTHUB_REPLAY_MAX
    events or EVENTHUB_REPLAY_MAX_BYTES bytes of event JSON were missed. Reads no event: the
    number missed comes from the tenant's sequence, the bytes from aggregates.
    """
    parsed = event_id_parse(last_event_id)
    assert parsed is not None, "validated by the caller"
    after, after_epoch = parsed
    backend = runtime.get_backend()
    until = await backend.current_seq(tenant_id)
    epoch = await backend.current_epoch(tenant_id) or after_epoch
    # Seqs are dense, so `until - after` events were missed. That holds across a restart too:
    # a new epoch continues after the log's last seq. The anchor and counts below check it.
    missed = until - after
    if after < 1 or missed < 0 or missed > settings.EVENTHUB_REPLAY_MAX:
        return NOT_RECOVERED
    budget = settings.EVENTHUB_REPLAY_MAX_BYTES
    anchor = await backend.buffered(tenant_id, after, after)
    if anchor and anchor[0].id != last_event_id:
        return NOT_RECOVERED  # that seq is another event: an id of another run or tenant
    first, held, size = await backend.buffered_size(tenant_id, after + 1, until, patterns)
    if held and first + held - 1 != until:
        return NOT_RECOVERED  # not one run of seqs up to now: the sequence was re-seeded
    if size > budget:
        return NOT_RECOVERED
    plan = ReplayPlan(
        recovered=True,
        tenant_id=tenant_id,
        patterns=patterns,
        after=after,
        until=until,
        log_until=after,
        epoch=epoch,
        size=size,
    )
    if anchor and held == missed:
        return plan
    # The buffer is trimmed from its oldest end: it holds first..until, the log the rest.
    log_until = first - 1 if held else until
    span = await log_reads(
        tenant_id, _log_span, tenant_id, after, last_event_id, log_until, patterns, budget - size
    )
    if span is None:
        return NOT_RECOVERED
    log_held, log_events, log_size = span
    if log_held != log_until - after or size + log_size > budget:
        return NOT_RECOVERED
    return replace(
        plan, log_until=log_until, size=size + log_size, log_events=log_events, log_size=log_size
    )


def _log_page(plan: ReplayPlan, first_seq: int, last_seq: int, limit: int) -> list[Envelope]:
    return event_log_page(
        tenant_id=plan.tenant_id,
        first_seq=first_seq,
        last_seq=last_seq,
        patterns=plan.patterns,
        limit=limit,
    )


def _log_holds(plan: ReplayPlan, first_seq: int, last_seq: int) -> bool:
    """True when the log holds every event with first_seq <= seq <= last_seq."""
    held = event_log_count(tenant_id=plan.tenant_id, first_seq=first_seq, last_seq=last_seq)
    return held == last_seq - first_seq + 1


def _rows_for(size: int, events: int) -> int:
    """Rows of about PAGE_BYTES, for events of `size` bytes in all."""
    if events <= 0 or size <= 0:
        return PAGE_EVENTS
    return max(1, min(PAGE_EVENTS, PAGE_BYTES * events // size))


async def replay_pages(plan: ReplayPlan) -> AsyncGenerator[list[Envelope], None]:
    """The planned events the patterns match, oldest first, a page at a time: each page is
    read when the caller asks for the next. Raises ReplayInterrupted when neither the buffer
    nor the log holds what is left to send."""
    backend = runtime.get_backend()
    seq, log_until = plan.after + 1, plan.log_until
    # Log pages are sized from the mean of the last page (of the plan's sizes at first).
    rows = _rows_for(plan.log_size, plan.log_events)
    while seq <= plan.until:
        if seq <= log_until:
            page = await log_reads(plan.tenant_id, _log_page, plan, seq, log_until, rows)
            # Fewer rows than asked: nothing more up to log_until matches.
            seq = page[-1].seq + 1 if len(page) == rows else log_until + 1
            if page:
                yield page
                rows = _rows_for(sum(len(e.frame) for e in page), len(page))
            continue
        page = await backend.buffered_page(plan.tenant_id, seq, plan.until, PAGE_EVENTS, PAGE_BYTES)
        if page and page[0].seq == seq:
            seq = page[-1].seq + 1
            matching = _matching(page, plan.patterns)
            if matching:
                yield matching
            continue
        # The tenant published more than the buffer holds while this replay was sent: what
        # the buffer dropped is read from the log, if the log has it by now.
        log_until = page[0].seq - 1 if page else plan.until
        if not await log_reads(plan.tenant_id, _log_holds, plan, seq, log_until):
            raise ReplayInterrupted


async def _send_page(sub: Subscriber, page: list[Envelope]) -> None:
    # One write for the page where the connection takes frames straight to its socket.
    frames = Frames(page)
    if not sub.write(frames):
        await sub.send_events(frames)


def _write_bytes() -> int:
    """Bytes of event JSON written at once, and left unread before the next write: far enough
    under EVENTHUB_MAX_BUFFER_BYTES that the heartbeat's slow-consumer check never catches a
    client that reads."""
    return max(1, min(PAGE_BYTES, settings.EVENTHUB_MAX_BUFFER_BYTES // 4))


def _writes(page: list[Envelope], most: int) -> Iterator[list[Envelope]]:
    """The page in runs of at most `most` bytes of event JSON (one event at least)."""
    run: list[Envelope] = []
    size = 0
    for envelope in page:
        size += len(envelope.frame)
        if run and size > most:
            yield run
            run, size = [], len(envelope.frame)
        run.append(envelope)
    if run:
        yield run


async def _drained(sub: Subscriber, most: int) -> bool:
    """Waits until the client has left at most `most` bytes of what it was sent unread on the
    server; False when it has not within half of EVENTHUB_STALE_TIMEOUT (a slow consumer).

    Half: a client that stops reading often stops sending too, and the heartbeat would close it
    as silent (4408) after the whole timeout; what it should learn is to resume (4008).
    """
    await asyncio.sleep(0)  # a write at a time: the loop's other work goes on between them
    if sub.backlog is None:
        return True  # not daphne: the server shows no backlog to wait on
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.EVENTHUB_STALE_TIMEOUT / 2
    delay = DRAIN_POLL_FIRST
    while not sub.closed and sub.backlog() > most:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, DRAIN_POLL_MOST)
    return True


async def replay_stream(sub: Subscriber, plan: ReplayPlan) -> None:
    """Sends a connection its planned replay, then hands it to live delivery (`Hub.go_live`).

    Called once the welcome is sent, in a task of the consumer's, which goes on reading the
    client meanwhile. Pages are written a run of `_write_bytes()` at a time, each once the
    client has taken all but that much of the one before off the server, and read when the
    last run of the page before is written; a client that does not take it within half of
    EVENTHUB_STALE_TIMEOUT is closed as a slow consumer (4008), as is one whose live events held
    back meanwhile pass EVENTHUB_MAX_BUFFER_BYTES (`Subscriber.hold`). Either way it reconnects
    with the last id it got.
    """
    hub = runtime.get_hub()
    most = _write_bytes()
    if plan.recovered:
        try:
            async with contextlib.aclosing(replay_pages(plan)) as pages:
                async for page in pages:
                    for run in _writes(page, most):
                        if sub.closed:
                            return
                        try:
                            await _send_page(sub, run)
                        except Exception:
                            logger.warning("dropping %s: a send failed", sub.connection_id)
                            await hub.close(sub, 1011, "send failed")
                            return
                        if not await _drained(sub, most):
                            await hub.close(sub, SLOW_CONSUMER, SLOW_REASON)
                            return
        except ReplayInterrupted:
            await hub.close(sub, SLOW_CONSUMER, SLOW_REASON)
            return
        except Exception:
            # The log or Redis failed mid-replay: what was sent is in order; the client
            # resumes from the last id it got.
            logger.exception("replay of connection %s failed", sub.connection_id)
            await hub.close(sub, 1011, "replay failed; reconnect with your last id")
            return
    if sub.closed:
        return
    # The client could not be asked for a pong while its replay was being sent.
    sub.last_seen = time.monotonic()
    await hub.go_live(sub)
