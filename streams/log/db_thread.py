"""Provides the log writers' database thread: one thread of their own that keeps its database
connection from one batch to the next, where Channels' `database_sync_to_async` would open and
close one around every call.

With `CONN_MAX_AGE = 0` (the settings' default, and the only safe one for request threads under
ASGI), each `database_sync_to_async` call ends with `close_old_connections()`: on the embedded
SQLite that is a connect, its PRAGMAs and, as the last connection closes, a checkpoint of the
WAL, per batch. Profiled by `bench/publish.py` at one client: about 0.8 ms of the process's
CPU per published event, half of what the publish path costs beyond a bare ASGI app on daphne,
and the request's own latency with it (the GIL is the writer's while it runs).
"""

import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


class DatabaseThread:
    """One thread for a writer's blocking database work; its connection lives from the first
    call until `release` (the writer calls it when idle and when it stops), or until a call
    fails, which closes it so that the writer's retry connects afresh (a database that
    restarted meanwhile, a broken socket)."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._closed = False

    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, Awaitable[_R]]:
        """`func` as a coroutine function running on this thread."""

        def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return func(*args, **kwargs)
            except BaseException:
                with contextlib.suppress(Exception):
                    connections.close_all()
                raise

        return sync_to_async(run, thread_sensitive=False, executor=self._executor)

    def wait_idle(self, timeout: float) -> None:
        """Blocks until the thread has done the work handed to it so far. For a caller on
        another thread that must not overlap it, whose event loop may be gone (a test's
        teardown, before the database is flushed)."""
        if not self._closed:
            self._executor.submit(lambda: None).result(timeout)

    async def release(self) -> None:
        """Closes the thread's connection (a pool gets it back); the next call opens one."""
        if self._closed:
            return
        try:
            await sync_to_async(
                connections.close_all, thread_sensitive=False, executor=self._executor
            )()
        except Exception:
            logger.warning("could not close the log writer's database connection", exc_info=True)

    async def close(self) -> None:
        """Releases the connection and ends the thread; called when the writer stops."""
        try:
            await self.release()
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)
