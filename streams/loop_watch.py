"""Provides the watch on the event loop's stalls: how long the loop, which serves every tenant,
was kept from running anything else.

A task wakes every INTERVAL and records how late it woke. Whatever one request, frame or
delivery costs the others shows here first (`eventhub_loop_stall_seconds`), whichever code
caused it: a parse, a walk, a garbage collection, a broadcast.
"""

import asyncio

from streams import metrics

INTERVAL = 0.01


async def loop_watch() -> None:
    """Runs for the life of the hub (started by Hub.start, cancelled at shutdown)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + INTERVAL
        await asyncio.sleep(INTERVAL)
        metrics.LOOP_STALL_SECONDS.observe(max(0.0, loop.time() - due))
