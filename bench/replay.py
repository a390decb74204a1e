"""Prints the cost of resuming: time to replay the whole replay window to one subscriber, from
the buffer and from the persisted log, on the embedded default and on Redis + PostgreSQL.

    .venv/bin/python bench/replay.py [--window 1000] [--engines embedded,redis]

Loopback only; bounded in count and time.
"""

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import redis
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.processes import Process, base_env, manage

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


async def replay_seconds(web: Process, key: str, last_id: str, expect: int) -> float:
    started = time.perf_counter()
    # Every frame is read before closing: a client that stops reading stops seeing the close.
    async with websockets.connect(
        f"{web.ws_url}/ws/v1/events?last_event_id={last_id}",
        additional_headers={"Authorization": f"Bearer {key}"},
        ping_interval=None,
        max_size=None,
    ) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert welcome["recovered"], welcome
        got = 0
        while got < expect:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            got += frame["type"] == "event"
    return time.perf_counter() - started


async def run(engine: str, window: int, workdir: Path) -> list[tuple[str, float]]:
    database = None
    if engine == "redis":
        database = f"eventhub_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        redis.Redis(db=13).flushdb()
        extra = {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
            "REDIS_URL": "redis://127.0.0.1:6379/13",
        }
    else:
        extra = {"DATABASE_URL": f"sqlite:///{workdir / f'replay-{engine}.sqlite3'}"}
    env = base_env(EVENTHUB_REPLAY_WINDOW=str(window), EVENTHUB_KEY_CACHE_SECONDS="2", **extra)
    manage(env, "migrate", "--no-input")
    manage(env, "create_tenant", "bench")
    key = manage(env, "create_api_key", "bench").strip().splitlines()[-1]
    processes = [Process("web", env, workdir).start()]
    if engine == "redis":
        processes.append(Process("worker", env, workdir).start())
    web = processes[0]
    rows = []
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as client:
            ids = []
            latencies = []
            for start in range(0, 2 * window, 100):
                events = [{"topic": "t", "data": {"n": start + i}} for i in range(100)]
                response = await client.post(
                    f"{web.url}/api/v1/events/batch", json={"events": events}
                )
                ids += [e["id"] for e in response.json()["events"]]
            for _ in range(200):
                t = time.perf_counter()
                response = await client.post(
                    f"{web.url}/api/v1/events", json={"topic": "t", "data": 0}
                )
                latencies.append(time.perf_counter() - t)
                ids.append(response.json()["id"])
            latencies.sort()
            rows.append(("publish one event, p50 (ms)", latencies[100] * 1000))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                stats = (await client.get(f"{web.url}/api/v1/stats")).json()
                if stats["persistence"]["pending"] == 0:
                    break
                await asyncio.sleep(0.1)
        # From the buffer: the oldest event it holds, so the other window - 1 are replayed.
        from_buffer = await replay_seconds(web, key, ids[-window], window - 1)
        rows.append((f"replay {window - 1} events from the buffer (ms)", from_buffer * 1000))
        # From the log: the first id, older than the buffer.
        from_log = await replay_seconds(web, key, ids[0], len(ids) - 1)
        rows.append((f"replay {len(ids) - 1} events from log + buffer (ms)", from_log * 1000))
    finally:
        for process in processes:
            process.stop()
        if database:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return rows


def sequencing_cost(samples: int = 2000) -> list[tuple[str, float]]:
    """What sequencing adds to a publish on Redis: the Lua script that rate-limits, numbers,
    buffers and logs an event, against the one PUBLISH a channel layer alone would do."""
    from streams.backends.redis import PUBLISH, SEED
    from streams.redis_keys import tenant_key

    client = redis.Redis(db=13)
    client.flushdb()
    tenant = 999_999
    keys = [tenant_key(tenant, "seq"), tenant_key(tenant, "buffer"), "eventhub:bench-log"]
    keys += [tenant_key(tenant, "stats"), tenant_key(tenant, "rate")]
    client.register_script(SEED)(keys=[keys[0]], args=[0, "bench"])
    script = client.register_script(PUBLISH)
    data = json.dumps({"n": 1, "text": "x" * 100})
    args = [tenant, 1000, repr(time.time()), 1, 0, json.dumps("t"), json.dumps("message"), data]
    lua, plain = [], []
    for _ in range(samples):
        t = time.perf_counter()
        script(keys=keys, args=args)
        lua.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.publish("eventhub:bench-channel", data)
        plain.append(time.perf_counter() - t)
    client.flushdb()
    lua.sort()
    plain.sort()
    mid = samples // 2
    return [
        ("sequencing script, p50 (ms)", lua[mid] * 1000),
        ("plain PUBLISH of the same event, p50 (ms)", plain[mid] * 1000),
        ("sequencing adds, p50 (ms)", (lua[mid] - plain[mid]) * 1000),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--engines", default="embedded,redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines.split(","):
            for label, value in asyncio.run(run(engine, args.window, Path(tmp))):
                print(f"{engine:9} {label:48} {value:9.1f}")
            if engine == "redis":
                for label, value in sequencing_cost():
                    print(f"{engine:9} {label:48} {value:9.3f}")


if __name__ == "__main__":
    main()
