"""Provides the embedded persistence consumer: an in-process queue that a background task writes
to the event log in batches, so that delivery never waits on storage."""

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable

from django.conf import settings

from streams import metrics
from streams.envelope import Envelope
from streams.log.db_thread import DatabaseThread
from streams.log.retry import Backoff
from streams.tasks import background_task

logger = logging.getLogger(__name__)

KEY_USAGE_FLUSH_SECONDS = 10.0


class LocalLogQueue:
    """Holds accepted events until the writer task has committed them to the log.

    Lives on the serving event loop; `put` is called there by the publish path, and the writer
    runs the blocking database work in a thread of its own (`DatabaseThread`, which keeps its
    connection while the writer is busy) so requests never queue behind it.
    """

    def __init__(
        self,
        write_batch: Callable[[list[Envelope]], int],
        flush_usage: Callable[[], int],
        write_records: Callable[[list], int] | None = None,
        records_written: Callable[[list], None] | None = None,
        committed: Callable[[], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._db = DatabaseThread("eventhub-log-writer")
        self._write_batch = self._db(write_batch)
        self._flush_usage = self._db(flush_usage)
        self._write_records = write_records and self._db(write_records)
        self._queue: deque[Envelope] = deque()
        # Events ever queued and ever written: a record waits, with the count queued when it
        # came, until that many are written, so it never stands for events the log lacks.
        self._queued = self._written = 0
        self._records: deque[tuple[int, object]] = deque()
        self._records_written = records_written
        # Told on the loop after each commit (the webhook sender: new deliveries may be due).
        self._committed = committed
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # Per tenant: receipt times of pending events, oldest first, for stats.
        self._pending: defaultdict[int, deque[float]] = defaultdict(deque)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = background_task(self._run(), name="eventhub-log-writer")

    def put(self, envelopes: list[Envelope]) -> None:
        """Queues accepted events for the log; called on the loop, never blocks."""
        self.start()
        self._queue.extend(envelopes)
        self._queued += len(envelopes)
        pending = self._pending[envelopes[0].tenant_id]
        ts = envelopes[0].received_at.timestamp()
        pending.extend(ts for _ in envelopes)
        self._idle.clear()
        self._wakeup.set()
        metrics.PERSISTENCE_PENDING.inc(len(envelopes))

    def put_record(self, record) -> None:
        """Queues a record to write after the events queued so far; called on the loop."""
        self.start()
        self._records.append((self._queued, record))
        self._idle.clear()
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        """Events queued and not yet written, over every tenant."""
        return self._queued - self._written

    def pending(self, tenant_id: int) -> tuple[int, float]:
        """Returns (events not yet in the log, age in seconds of the oldest one)."""
        times = self._pending.get(tenant_id)
        if not times:
            return 0, 0.0
        return len(times), max(0.0, time.time() - times[0])

    async def drain(self, within: float = 30.0) -> bool:
        """Waits until everything queued is in the log; True when it got there in time."""
        if self._task is None:
            return True
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            logger.error("event log drain timed out with %d events pending", len(self._queue))
            return False
        return True

    def wait_idle(self, timeout: float) -> None:
        """Blocks until the database work under way is done (`DatabaseThread.wait_idle`)."""
        self._db.wait_idle(timeout)

    async def stop(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._db.close()

    async def _run(self) -> None:
        batch_size = settings.EVENTHUB_PERSIST_BATCH
        linger = settings.EVENTHUB_PERSIST_LINGER
        next_usage_flush = time.monotonic() + KEY_USAGE_FLUSH_SECONDS
        while True:
            if not self._queue and not self._records:
                self._idle.set()
                self._wakeup.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 a cancel that arrives as the
                # wakeup does is swallowed by wait_for, and the writer would never stop
                # (https://github.com/python/cpython/issues/86296, fixed in 3.12).
                try:
                    async with asyncio.timeout(KEY_USAGE_FLUSH_SECONDS):
                        await self._wakeup.wait()
                except TimeoutError:
                    # Idle for a while: its connection goes back (to the pool, or closed, so
                    # SQLite checkpoints its WAL) until the next batch.
                    await self._db.release()
            if self._queue and len(self._queue) < batch_size and linger > 0:
                # A short linger turns a stream of single events into few transactions.
                await asyncio.sleep(linger)
            if self._queue:
                batch = [self._queue.popleft() for _ in range(min(batch_size, len(self._queue)))]
                await self._write(batch)
            ready = []
            while self._records and self._records[0][0] <= self._written:
                ready.append(self._records.popleft())
            if ready:
                records = [record for _, record in ready]
                await self._retrying(self._write_records, records, requeue=self._requeue_records)
                if self._records_written is not None:
                    # On the loop, once committed: only now may memory rely on the database.
                    self._records_written(records)
                if self._committed is not None:
                    self._committed()
            if time.monotonic() >= next_usage_flush:
                next_usage_flush = time.monotonic() + KEY_USAGE_FLUSH_SECONDS
                try:
                    await self._flush_usage()
                except Exception:
                    logger.exception("could not record API key usage")

    def _requeue_events(self, batch: list[Envelope]) -> None:
        self._queue.extendleft(reversed(batch))

    def _requeue_records(self, records: list) -> None:
        # Back at the front, ready at once: their events were written.
        self._records.extendleft((0, record) for record in reversed(records))

    async def _retrying(self, write, items: list, requeue: Callable[[list], None]) -> None:
        """Writes `items`, retrying with backoff: nothing accepted is ever dropped."""
        backoff = Backoff()
        while True:
            try:
                await write(items)
                return
            except asyncio.CancelledError:
                requeue(items)
                raise
            except Exception:
                logger.exception("event log write failed; retrying %d items", len(items))
                await backoff.wait()

    async def _write(self, batch: list[Envelope]) -> None:
        await self._retrying(self._write_batch, batch, requeue=self._requeue_events)
        self._written += len(batch)
        if self._committed is not None:
            self._committed()
        # Counted here, on the loop in one step with the pending times, not in the writing
        # thread: /stats must never see an event both persisted and pending.
        for tenant_id, n in Counter(e.tenant_id for e in batch).items():
            pending = self._pending[tenant_id]
            for _ in range(n):
                pending.popleft()
            metrics.count_persisted(tenant_id, n)
        metrics.PERSISTENCE_PENDING.dec(len(batch))
