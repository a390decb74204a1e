"""Provides the process-wide parts of the hub (sequencer, hub, log queue), made on first use
and bound to the event loop that serves the process."""

import asyncio
import logging

from streams.hub import Hub
from streams.persistence import LocalLogQueue
from streams.sequencing import LocalSequencer

logger = logging.getLogger(__name__)

_sequencer: LocalSequencer | None = None
_hub: Hub | None = None
_log_queue: LocalLogQueue | None = None


def get_sequencer() -> LocalSequencer:
    global _sequencer
    if _sequencer is None:
        from streams.selectors import event_log_last_seq

        _sequencer = LocalSequencer(seed=lambda tenant_id: event_log_last_seq(tenant_id=tenant_id))
    return _sequencer


def get_hub() -> Hub:
    """The hub of the running loop (a new loop, as in tests, gets a new hub)."""
    global _hub
    loop = asyncio.get_running_loop()
    if _hub is None or _hub.loop is not loop:
        _hub = Hub()
        _install_shutdown_hook()
    return _hub


def get_log_queue() -> LocalLogQueue:
    global _log_queue
    loop = asyncio.get_running_loop()
    if _log_queue is None or _log_queue.loop is not loop:
        from streams.services import event_log_write_batch
        from tenants.services import api_keys_flush_usage

        _log_queue = LocalLogQueue(
            write_batch=lambda batch: event_log_write_batch(envelopes=batch),
            flush_usage=api_keys_flush_usage,
        )
        _install_shutdown_hook()
    return _log_queue


def peek_log_queue() -> LocalLogQueue | None:
    return _log_queue


def peek_hub() -> Hub | None:
    return _hub


async def shutdown() -> None:
    """Closes connections with 1001 and drains the log; run before the process exits."""
    if _hub is not None:
        await _hub.shutdown()
    if _log_queue is not None:
        await _log_queue.stop()


def reset() -> None:
    """Forgets every process-wide part; for tests that start from a clean process state."""
    global _sequencer, _hub, _log_queue
    _sequencer = _hub = _log_queue = None


_hook_installed = False


def _install_shutdown_hook() -> None:
    """Under daphne (Twisted), runs `shutdown` before the reactor stops, and waits for it."""
    global _hook_installed
    if _hook_installed:
        return
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    if not reactor.running:
        return

    def before_shutdown():
        logger.info("shutting down: closing connections and draining the event log")
        return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    _hook_installed = True
