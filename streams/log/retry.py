"""Provides the backoff both log writers retry with: nothing accepted is ever dropped, so a
failing database or Redis is retried until it answers, ever more slowly up to a bound."""

import asyncio


class Backoff:
    """Delays between retries: FIRST seconds, doubled after each failure up to MOST, and back
    to FIRST after a success (`reset`)."""

    FIRST = 0.2
    MOST = 5.0

    def __init__(self) -> None:
        self.delay = self.FIRST

    def reset(self) -> None:
        self.delay = self.FIRST

    async def wait(self) -> None:
        """Sleeps the current delay, then doubles it (up to MOST)."""
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.MOST)
