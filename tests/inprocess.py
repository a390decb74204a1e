"""Helpers over the ASGI application in the test's own process (`tests.conftest.asgi_client`),
shared by the unit tests of every app: publish an event or a batch (asserting the 202), and
wait, bounded, until the log writer has flushed a tenant's events."""

import asyncio

from tests.conftest import asgi_client


async def publish(key: str, topic: str = "t", data=None, type_: str | None = None) -> dict:
    """Publishes one event with the key; returns the accepted event (fails unless 202)."""
    body = {"topic": topic, "data": data} | ({"type": type_} if type_ else {})
    async with asgi_client(key) as client:
        response = await client.post("/api/v1/events", json=body)
    assert response.status_code == 202, response.content
    return response.json()


async def publish_batch(key: str, events: list[dict]) -> list[dict]:
    """Publishes a batch with the key; returns the accepted events (fails unless 202)."""
    async with asgi_client(key) as client:
        response = await client.post("/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.content
    return response.json()["events"]


async def wait_until_logged(key: str, count: int, within: float = 5.0) -> None:
    """Waits (bounded) until the log writer has flushed `count` events of the key's tenant."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with asgi_client(key) as client:
        while True:
            stats = (await client.get("/api/v1/stats")).json()
            if stats["events"]["persisted"] >= count and stats["persistence"]["pending"] == 0:
                return
            assert loop.time() < deadline, f"log not flushed in {within}s: {stats}"
            await asyncio.sleep(0.02)
