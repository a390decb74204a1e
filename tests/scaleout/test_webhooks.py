"""Webhooks on the Procfile layout (web and worker processes, Redis, PostgreSQL): every event
answered 202 reaches its endpoint, also when the worker is SIGKILLed mid-retry and when events
were accepted while no worker ran; a presence change made by a web process reaches the
endpoints of its kinds through the log stream and the worker."""

import asyncio
import json
import signal
import time

import httpx
import pytest

from tests.clients import ws_connect
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.e2e


async def publish_many(web, key: str, count: int) -> list[str]:
    async with httpx.AsyncClient(timeout=5) as client:
        ids = []
        for i in range(count):
            response = await client.post(
                f"{web.url}/api/v1/events",
                json={"topic": "orders", "data": i},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        return ids


async def test_every_event_reaches_its_webhook_across_a_sigkill_of_the_worker_mid_retry(
    make_cluster, pg_database, redis_url
):
    receiver = Receiver().start()
    try:
        receiver.answers["/hook"] = (500, 0.0)
        cluster = make_cluster(
            DATABASE_URL=pg_database,
            REDIS_URL=redis_url,
            EVENTHUB_CLAIM_IDLE="1",
            EVENTHUB_WEBHOOK_ALLOW_PRIVATE="1",
            EVENTHUB_WEBHOOK_TIMEOUT="1",
            EVENTHUB_WEBHOOK_RETRY_SCHEDULE="1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
        )
        web = cluster.start("web")
        worker = cluster.start("worker")
        key = cluster.tenant_key("acme")
        async with httpx.AsyncClient(timeout=5) as client:
            created = await client.post(
                f"{web.url}/api/v1/webhooks",
                json={"url": receiver.url("/hook"), "topics": ["orders"]},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert created.status_code == 201, created.text
            presence = await client.post(
                f"{web.url}/api/v1/webhooks",
                json={"url": receiver.url("/presence"), "topics": ["room"],
                      "kinds": ["presence", "occupancy"]},
                headers={"Authorization": f"Bearer {key}"},
            )  # fmt: skip
            assert presence.status_code == 201, presence.text
            issued = await client.post(
                f"{web.url}/api/v1/tokens",
                json={"topics": ["room"], "user": "ada", "info": {"n": 1}},
                headers={"Authorization": f"Bearer {key}"},
            )
        ada = await ws_connect(web.ws_url, token=issued.json()["token"], topics="room")
        await ada.welcome()
        arrived = await asyncio.to_thread(receiver.wait_for, "/presence", 2, 20.0)
        bodies = sorted((json.loads(r.body) for r in arrived), key=lambda b: b["type"])
        assert [(b["type"], b["topic"], b.get("user")) for b in bodies] == [
            ("join", "room", "ada"),
            ("occupied", "room", None),
        ]
        assert bodies[0]["info"] == {"n": 1}
        await ada.close()
        first = await publish_many(web, key, 20)
        # Every delivery failed once and waits for its retry: the worker dies now.
        await asyncio.to_thread(receiver.wait_for, "/hook", 25, 20.0)
        worker.signal(signal.SIGKILL)
        worker.wait(10)
        # Accepted while no worker runs: only in the Redis log stream.
        later = await publish_many(web, key, 10)
        receiver.answers["/hook"] = (200, 0.0)
        cluster.start("worker")

        wanted = set(first + later)
        deadline = time.monotonic() + 40
        while True:
            ok = {r.headers["webhook-id"] for r in receiver.to("/hook") if r.status == 200}
            if wanted <= ok:
                break
            assert time.monotonic() < deadline, f"{len(ok & wanted)} of 30 delivered"
            await asyncio.sleep(0.2)
        async with httpx.AsyncClient(timeout=5) as client:
            deadline = time.monotonic() + 20
            while True:
                listed = await client.get(
                    f"{web.url}/api/v1/webhooks/{created.json()['id']}/deliveries",
                    headers={"Authorization": f"Bearer {key}"},
                )
                statuses = {d["webhook_id"]: d["status"] for d in listed.json()["results"]}
                if set(statuses.values()) == {"delivered"}:
                    break
                assert time.monotonic() < deadline, statuses
                await asyncio.sleep(0.2)
        assert set(statuses) == set(first + later)
    finally:
        receiver.stop()
