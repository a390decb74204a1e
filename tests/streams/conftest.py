"""Provides what the streams tests share: a hub over a stand-in engine, and a count of the event
loop's turns."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from streams.delivery.hub import Hub
from tests.streams.test_hub import FakeBackend


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def hub(backend) -> AsyncIterator[Hub]:
    hub = Hub(backend)
    yield hub
    await hub.shutdown()


class LoopTurns:
    """How many times the loop ran something else while a test's work was under way."""

    count = 0


@pytest.fixture
async def loop_turns() -> AsyncIterator[LoopTurns]:
    """Counts the loop's turns until the test ends: work that yields to the loop shows as
    turns, work that holds it as none."""
    turns = LoopTurns()

    async def count() -> None:
        while True:
            turns.count += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count())
    await asyncio.sleep(0)
    turns.count = 0
    yield turns
    counter.cancel()
