"""Provides the garbage-collector settings of a serving process."""

import gc
import logging

from django.conf import settings

logger = logging.getLogger(__name__)


def install() -> None:
    """Called once when the ASGI application is imported, after Django and the app are loaded.

    A hub process holds many long-lived objects per connection (protocol, transport, consumer,
    scope), and every request allocates more. With CPython's default thresholds (700, 10, 10)
    the collector walks all of them every few hundred requests: at 1000 subscribers that showed
    as delivery pauses of 100-200 ms (bench/fanout.py). Freezing what exists at start-up and
    raising the first threshold makes collections rare and cheap; cycles are still collected.
    """
    thresholds = settings.EVENTHUB_GC_THRESHOLDS
    if not thresholds:
        return
    gc.collect()
    gc.freeze()  # modules, settings, URL patterns: never garbage, never scanned again
    gc.set_threshold(*thresholds)
    logger.debug("gc thresholds %s, %d objects frozen", thresholds, gc.get_freeze_count())
