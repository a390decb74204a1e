"""Presence across two web processes on Redis: each user listed once whichever process it is
connected to, joins reach the other process, and a SIGKILLed process's users leave within three
heartbeat intervals (EVENTHUB_HEARTBEAT_INTERVAL=1 here), leaving no keys behind."""

import asyncio
import time

import httpx
import pytest
import redis

from tests.clients import ws_connect

pytestmark = pytest.mark.e2e

HEARTBEAT = 1.0
GRACE = 1.0


@pytest.fixture
def webs(make_cluster, pg_database, redis_url):
    cluster = make_cluster(
        DATABASE_URL=pg_database, REDIS_URL=redis_url, EVENTHUB_PRESENCE_GRACE=str(GRACE)
    )
    cluster.web_a = cluster.start("web")
    cluster.web_b = cluster.start("web")
    cluster.key = cluster.tenant_key("acme")
    cluster.redis_url = redis_url
    return cluster


async def token(client: httpx.AsyncClient, base_url: str, user: str) -> str:
    response = await client.post(
        f"{base_url}/api/v1/tokens", json={"topics": ["room"], "user": user, "info": {"n": user}}
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def users_on(client: httpx.AsyncClient, base_url: str) -> list[tuple[str, int]]:
    response = await client.get(f"{base_url}/api/v1/presence", params={"topic": "room"})
    assert response.status_code == 200, response.text
    return sorted((u["user"], u["connections"]) for u in response.json()["users"])


async def test_presence_is_shared_and_a_killed_process_takes_its_users_out(webs):
    auth = {"Authorization": f"Bearer {webs.key}"}
    async with httpx.AsyncClient(headers=auth, timeout=10, trust_env=False) as client:
        ada = await token(client, webs.web_a.url, "ada")
        bob = await token(client, webs.web_a.url, "bob")
        watcher = await ws_connect(webs.web_a.ws_url, token=ada, topics="room", presence="1")
        assert (await watcher.welcome())["presence"] == {
            "room": [{"user": "ada", "info": {"n": "ada"}}]
        }
        tabs = [
            await ws_connect(webs.web_b.ws_url, token=bob, topics="room", presence="1")
            for _ in range(2)
        ]
        for tab in tabs:
            await tab.welcome()
        assert await watcher.next_frame() == {
            "type": "join", "topic": "room", "user": "bob", "info": {"n": "bob"},
        }  # fmt: skip
        # A second connection of bob from the other process: listed once, counted twice there.
        also = await ws_connect(webs.web_a.ws_url, token=bob, topics="room")
        await also.welcome()
        for web in (webs.web_a, webs.web_b):
            assert await users_on(client, web.url) == [("ada", 1), ("bob", 3)]
        await also.close()

        webs.web_b.kill()
        killed_at = time.monotonic()
        left = await watcher.next_frame(within=3 * HEARTBEAT + GRACE + 2)
        assert left == {"type": "leave", "topic": "room", "user": "bob"}
        # bob's connection on web_a is held for the grace (ended before the kill), so the
        # leave is the later of the lease running out and that grace.
        assert time.monotonic() - killed_at < 3 * HEARTBEAT + 0.5
        assert await users_on(client, webs.web_a.url) == [("ada", 1)]

        await watcher.close()
        await asyncio.sleep(GRACE + 1)
        assert await users_on(client, webs.web_a.url) == []
    keys = redis.Redis.from_url(webs.redis_url)
    try:
        assert keys.keys("eventhub:t:*:presence*") == [], "presence keys left behind"
        assert keys.keys("eventhub:presence:held:*") == []
    finally:
        keys.close()
