"""Provides `manage.py runworker eventhub.persist [other channels]`: Channels' worker, which also
runs the persistence worker when `eventhub.persist` is among its channels."""

import asyncio
import logging

from channels.management.commands.runworker import Command as ChannelsRunworker
from channels.worker import Worker
from django.conf import settings
from django.core.management import CommandError

from streams.log.worker import PERSIST_CHANNEL, LogStreamWorker
from streams.log.worker_port import WorkerPort

logger = logging.getLogger(__name__)


class EventhubWorker(Worker):
    async def handle(self) -> None:
        """Called once the worker's loop runs: persists the log, and serves other channels."""
        others = [c for c in self.channels if c != PERSIST_CHANNEL]
        tasks = [asyncio.ensure_future(self.listener(c)) for c in others]
        if PERSIST_CHANNEL in self.channels:
            port = WorkerPort()
            if settings.EVENTHUB_WORKER_METRICS_PORT:
                # Before the worker says it reads the stream: a scraper may look from then on.
                try:
                    bound = port.start("0.0.0.0", settings.EVENTHUB_WORKER_METRICS_PORT)
                    logger.info("worker metrics and health on port %d", bound)
                except OSError as exc:
                    # Persisting matters more than being watched: the worker goes on.
                    logger.error("no worker metrics port: %s", exc)
            try:
                await LogStreamWorker(port).run()
            finally:
                port.stop()
            for task in tasks:
                task.cancel()
        elif tasks:
            await asyncio.gather(*tasks)


class Command(ChannelsRunworker):
    help = f"Runs a worker; with the channel '{PERSIST_CHANNEL}' it persists the event log."
    worker_class = EventhubWorker

    def handle(self, *args, **options):
        if PERSIST_CHANNEL in options["channels"] and not settings.REDIS:
            raise CommandError(
                "Without REDIS_URL or REDIS_SENTINELS the event log is persisted inside the web "
                "process; no worker is needed. Set one to run separate persistence workers."
            )
        super().handle(*args, **options)
