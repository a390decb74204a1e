"""Provides the persistence worker: it takes accepted events from the Redis log stream and writes
them to the event log in batches, acknowledging a batch only once it is committed.

Delivery is at least once (an entry taken by a worker that dies is claimed by another after
EVENTHUB_CLAIM_IDLE seconds) and the write is idempotent, so the log holds each event once.
"""

import asyncio
import logging
import os
import signal
import socket
import time
from collections import Counter
from typing import cast

from django.conf import settings
from redis.exceptions import RedisError, ResponseError

from streams import metrics
from streams.log.db_thread import DatabaseThread
from streams.log.retry import Backoff
from streams.log.worker_port import WorkerPort
from streams.log.writes import event_log_write_batch
from streams.redis_keys import (
    LOG_STREAM,
    envelope_from_member,
    log_backlog,
    redis_client,
    tenant_key,
)
from webhooks.enqueue import deliveries_for_notices
from webhooks.notices import WebhookNotice
from webhooks.sender import WebhookSender

logger = logging.getLogger(__name__)

GROUP = "eventhub-persist"
PERSIST_CHANNEL = "eventhub.persist"


# How often the worker reads the log's backlog for its gauges (two cheap Redis reads).
BACKLOG_EVERY_SECONDS = 1.0


class LogStreamWorker:
    def __init__(self, port: WorkerPort | None = None) -> None:
        self.port = port
        self.redis = redis_client()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = asyncio.Event()
        # One connection for the worker's writes, kept from batch to batch.
        self._db = DatabaseThread("eventhub-log-worker")
        self._write = self._db(lambda batch: event_log_write_batch(envelopes=batch))
        self._write_notices = self._db(lambda notices: deliveries_for_notices(notices=notices))
        self.webhook_sender = WebhookSender()
        self.batch_size = settings.EVENTHUB_PERSIST_BATCH
        self.claim_idle_ms = int(settings.EVENTHUB_CLAIM_IDLE * 1000)
        self._backlog_read_at = 0.0

    async def _ensure_group(self) -> None:
        try:
            # From the start of the stream: entries added before any worker ran are kept.
            await self.redis.xgroup_create(LOG_STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _next_batch(self) -> list[tuple[bytes, dict]]:
        # First what died with other workers, then new entries.
        claimed = await self.redis.xautoclaim(
            LOG_STREAM, GROUP, self.name, self.claim_idle_ms, "0-0", count=self.batch_size
        )
        entries = [e for e in claimed[1] if e[1]]
        if entries:
            return entries
        # redis-py types every reply as the union of all its commands' replies: this one is
        # [[stream, [(entry id, fields), ...]]].
        response = cast(
            list[tuple[bytes, list[tuple[bytes, dict]]]],
            await self.redis.xreadgroup(
                GROUP, self.name, {LOG_STREAM: ">"}, count=self.batch_size, block=1000
            ),
        )
        return response[0][1] if response else []

    async def _commit(self, entries: list[tuple[bytes, dict]]) -> None:
        started = time.perf_counter()
        # An entry is an event (t, e) or a presence notice for the webhooks (w).
        envelopes = [envelope_from_member(int(f[b"t"]), f[b"e"]) for _, f in entries if b"e" in f]
        notices = [WebhookNotice.from_json(f[b"w"]) for _, f in entries if b"w" in f]
        if envelopes:
            await self._write(envelopes)
        if notices:
            await self._write_notices(notices)
        self.webhook_sender.wake()
        ids = [entry_id for entry_id, _ in entries]
        per_tenant = Counter(e.tenant_id for e in envelopes)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(LOG_STREAM, GROUP, *ids)
            pipe.xdel(LOG_STREAM, *ids)
            for tenant_id, n in per_tenant.items():
                pipe.hincrby(tenant_key(tenant_id, "stats"), "persisted", n)
            await pipe.execute()
        for tenant_id, n in per_tenant.items():
            metrics.count_persisted(tenant_id, n)
        metrics.WORKER_BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _read_backlog(self) -> None:
        """Sets the backlog gauges from the stream, at most once a second."""
        now = time.monotonic()
        if now - self._backlog_read_at < BACKLOG_EVERY_SECONDS:
            return
        self._backlog_read_at = now
        pending, lag = await log_backlog(self.redis)
        metrics.PERSISTENCE_PENDING.set(pending)
        metrics.PERSISTENCE_LAG.set(lag)

    async def run(self) -> None:
        """Runs until SIGTERM or SIGINT, then finishes the batch in hand and returns."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        logger.info("persistence worker %s reading %s", self.name, LOG_STREAM)
        sender = None
        if settings.EVENTHUB_WEBHOOK_SENDER:
            sender = asyncio.ensure_future(self.webhook_sender.run())
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                await self._ensure_group()
                while not self.stopping.is_set():
                    entries = await self._next_batch()
                    if entries:
                        await self._commit(entries)
                    await self._read_backlog()
                    backoff.reset()
                    self._went_round(redis_ok=True)
            except (RedisError, OSError) as exc:
                metrics.WORKER_ERRORS.labels("redis").inc()
                self._went_round(redis_ok=False)
                logger.warning("redis unreachable (%s); retrying in %.1fs", exc, backoff.delay)
            except Exception:
                # A failed database write: the entries stay pending and are retried.
                metrics.WORKER_ERRORS.labels("database").inc()
                self._went_round(redis_ok=True)
                logger.exception("persisting a batch failed; retrying in %.1fs", backoff.delay)
            if not self.stopping.is_set():
                await backoff.wait()
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        await self.redis.aclose()
        await self._db.close()
        logger.info("persistence worker %s stopped", self.name)

    def _went_round(self, *, redis_ok: bool) -> None:
        if self.port is not None:
            self.port.went_round(redis_ok=redis_ok)
