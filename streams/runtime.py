"""Provides the process-wide parts of the hub (the engine and the hub), made on first use and
bound to the event loop that serves the process."""

import asyncio
import logging
import os
import sys
import threading
import time

from django.conf import settings

from streams import metrics
from streams.backends.local import LocalBackend
from streams.backends.redis import RedisBackend
from streams.delivery.hub import Hub
from streams.engine import Engine

logger = logging.getLogger(__name__)

_backend: Engine | None = None
_hub: Hub | None = None


def get_backend() -> Engine:
    """The engine of the running loop: Redis when settings.REDIS is set, else this process."""
    global _backend
    loop = asyncio.get_running_loop()
    if _backend is None or _backend.loop is not loop:
        _backend = RedisBackend() if settings.REDIS else LocalBackend()
        _backend.start()
    return _backend


def get_hub() -> Hub:
    """The hub of the running loop (a new loop, as in tests, gets a new hub)."""
    global _hub
    loop = asyncio.get_running_loop()
    if _hub is None or _hub.loop is not loop:
        _hub = Hub(get_backend())
    return _hub


def peek_hub() -> Hub | None:
    return _hub


def peek_backend() -> Engine | None:
    return _backend


def sample_loop_gauges() -> None:
    """Called by the /metrics view, on the serving loop: sets the gauges of the loop's tasks
    and of the hub's tenants and connections. On the loop's own thread because
    `asyncio.all_tasks` read from another thread races the loop adding and removing tasks."""
    loop = asyncio.get_running_loop()
    metrics.ASYNCIO_TASKS.set(len(asyncio.all_tasks(loop)))
    tenants = list(_hub.tenants.values()) if _hub is not None and _hub.loop is loop else []
    metrics.HUB_TENANTS.set(len(tenants))
    metrics.HUB_SUBSCRIBERS.set(sum(len(tenant.subscribers) for tenant in tenants))


async def shutdown() -> None:
    """Closes connections with 1001 and drains the log; run before the process exits."""
    if _hub is not None:
        await _hub.shutdown()
    if _backend is not None:
        await _backend.close()


def reset() -> None:
    """Forgets every process-wide part; for tests that start from a clean process state."""
    global _backend, _hub
    _backend = _hub = None


_hook_installed = False

# How long the process may take to exit once the reactor has stopped and the log is drained.
EXIT_GRACE_SECONDS = 3.0


def _exit_when_stuck(grace: float) -> None:
    """Ends the process if it is still there `grace` seconds after the reactor stopped.

    A request that was in flight at SIGTERM can leave a worker thread waiting in asgiref's
    AsyncToSync for a loop that has stopped; the interpreter then waits for that thread at exit,
    forever. By now every connection was closed and the event log drained (the "before"
    trigger), and a request cut off here was never answered, so nothing it did was promised.
    """

    def watchdog() -> None:
        time.sleep(grace)
        stuck = [t.name for t in threading.enumerate() if not t.daemon and t.is_alive()]
        logger.warning("exiting: threads still running after shutdown: %s", ", ".join(stuck))
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watchdog, name="eventhub-exit-watchdog", daemon=True).start()


def install_shutdown_hook() -> None:
    """Under daphne (Twisted), runs `shutdown` before the reactor stops, and waits for it;
    after it stops, makes sure the process does exit.

    Called when the ASGI application is imported, before daphne registers its own trigger that
    cancels every consumer: ours must come first, so that connections get their 1001 while
    their consumers still run.
    """
    global _hook_installed
    if _hook_installed or "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    def before_shutdown():
        logger.info("shutting down: closing connections and draining the event log")
        return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown()))

    # Twisted declares its interfaces without `self`, which mypy reads one argument off
    # without the mypy-zope plugin (https://github.com/Shoobx/mypy-zope).
    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)  # type: ignore[arg-type]
    after = (_exit_when_stuck, EXIT_GRACE_SECONDS)
    reactor.addSystemEventTrigger("after", "shutdown", *after)  # type: ignore[arg-type]
    _hook_installed = True
