"""Provides how the hub and the engines start the tasks that run for the life of the process."""

import asyncio
import contextvars
from collections.abc import Coroutine


def background_task(coro: Coroutine, name: str) -> asyncio.Task:
    """Starts a task that outlives whatever started it, in a context of its own.

    The hub and the engines start on first use, which may be inside a request: a task created
    there would inherit the request's context, in which asgiref sends thread-sensitive work
    (database_sync_to_async) to that request's thread, gone once the request ends. Every
    database call of the task would then fail ("CurrentThreadExecutor already quit") for the
    life of the process: no revoked key or suspended tenant would be closed.
    """
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())
