"""Webhook delivery on the embedded default: deliveries per second of one sending process at 1,
10 and 100 ms of receiver latency, publish→webhook latency (p50/p99), and a slow endpoint of
one tenant beside another tenant's.

Starts the Procfile's web process (SQLite, no Redis: the web process sends), a real HTTP
receiver on loopback (EVENTHUB_WEBHOOK_ALLOW_PRIVATE=1 for it) that answers 200 after the
latency set for each path, and one endpoint per tenant.

    .venv/bin/python bench/webhooks.py [--tenants 8] [--events 100]
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.processes import Process, base_env, manage
from tests.webhooks.receiver import Receiver


def received_at(body: str) -> float:
    return datetime.fromisoformat(json.loads(body)["ts"].replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def register(client: httpx.AsyncClient, url: str, key: str, hook: str) -> None:
    response = await client.post(
        f"{url}/api/v1/webhooks",
        json={"url": hook},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text


async def publish(client: httpx.AsyncClient, url: str, key: str, n: int) -> None:
    events = [{"topic": "t", "data": i} for i in range(n)]
    for start in range(0, n, 100):
        response = await client.post(
            f"{url}/api/v1/events/batch",
            json={"events": events[start : start + 100]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 202, response.text


async def throughput(web, keys, receiver: Receiver, latency: float, events: int) -> str:
    paths = [f"/{int(latency * 1000)}ms/{i}" for i in range(len(keys))]
    for path in paths:
        receiver.answers[path] = (200, latency)
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        for key, path in zip(keys, paths, strict=True):
            await register(client, web.url, key, receiver.url(path))
        started = time.time()
        await asyncio.gather(*(publish(client, web.url, key, events) for key in keys))
    got = [
        r for path in paths for r in await asyncio.to_thread(receiver.wait_for, path, events, 120)
    ]
    ended = max(r.at for r in got)
    lat = [1000 * (r.at - received_at(r.body)) for r in got]
    return (
        f"latency {latency * 1000:>5.0f} ms  {len(got):>5} deliveries  "
        f"{len(got) / (ended - started):>7.0f}/s  publish→webhook p50 {pct(lat, 0.5):>6.0f} ms  "
        f"p99 {pct(lat, 0.99):>6.0f} ms"
    )


async def slow_beside_fast(web, slow_key: str, fast_key: str, receiver: Receiver) -> str:
    receiver.answers["/slow"] = (200, 2.0)
    receiver.answers["/fast"] = (200, 0.001)
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        await register(client, web.url, slow_key, receiver.url("/slow"))
        await register(client, web.url, fast_key, receiver.url("/fast"))
        await publish(client, web.url, slow_key, 200)  # 100 s of work at 4 in flight
        for _ in range(40):
            await publish(client, web.url, fast_key, 1)
            await asyncio.sleep(0.05)
    got = await asyncio.to_thread(receiver.wait_for, "/fast", 40, 30)
    lat = [1000 * (r.at - received_at(r.body)) for r in got]
    slow = len(receiver.to("/slow"))
    return (
        f"slow endpoint (2 s, 200 queued; {slow} answered meanwhile) beside another tenant's: "
        f"its publish→webhook p50 {pct(lat, 0.5):.0f} ms, p99 {pct(lat, 0.99):.0f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--events", type=int, default=100, help="per tenant and latency")
    args = parser.parse_args()
    receiver = Receiver().start()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = base_env(
            DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
            EVENTHUB_KEY_CACHE_SECONDS="60",
            EVENTHUB_WEBHOOK_ALLOW_PRIVATE="1",
        )
        manage(env, "migrate", "--no-input")
        keys = []
        for i in range(3 * args.tenants + 2):
            manage(env, "create_tenant", f"bench{i}")
            keys.append(manage(env, "create_api_key", f"bench{i}").strip().splitlines()[-1])
        web = Process("web", env, workdir).start()
        try:
            print(
                f"embedded default (SQLite), one sending process, {args.tenants} tenants with "
                f"one endpoint each, {args.events} events per tenant, 4 in flight per endpoint"
            )
            for n, latency in enumerate((0.001, 0.01, 0.1)):
                group = keys[n * args.tenants : (n + 1) * args.tenants]
                print(await throughput(web, group, receiver, latency, args.events))
            print(await slow_beside_fast(web, keys[-2], keys[-1], receiver))
        finally:
            web.stop()
            receiver.stop()


if __name__ == "__main__":
    asyncio.run(main())
