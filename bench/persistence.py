"""Prints event-log persistence throughput and lag under a steady publish rate.

    .venv/bin/python bench/persistence.py [--rate 1000] [--seconds 10] [--engines sqlite,postgres]

For each engine it starts the real processes (embedded: one daphne on SQLite that persists
in-process; postgres: one daphne plus one `runworker eventhub.persist` on Redis and
PostgreSQL), publishes in batches of --batch events at --rate events/s for --seconds, samples
`/api/v1/stats` every 100 ms, and prints events/s written, the lag seen while publishing and
the time to drain what was left. Loopback only; every loop is bounded in count and time.
"""

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.processes import Process, base_env, manage

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


async def run(
    engine: str, rate: int, seconds: float, batch: int, concurrency: int, workdir: Path
) -> dict:
    extra = {}
    database = None
    if engine == "postgres":
        database = f"eventhub_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        redis.Redis(db=12).flushdb()
        extra = {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
            "REDIS_URL": "redis://127.0.0.1:6379/12",
        }
    else:
        extra = {"DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}"}
    env = base_env(EVENTHUB_KEY_CACHE_SECONDS="2", **extra)
    manage(env, "migrate", "--no-input")
    manage(env, "create_tenant", "bench")
    key = manage(env, "create_api_key", "bench").strip().splitlines()[-1]
    processes = [Process("web", env, workdir).start()]
    if engine == "postgres":
        processes.append(Process("worker", env, workdir).start())
    web = processes[0]
    auth = {"Authorization": f"Bearer {key}"}
    lags: list[float] = []
    pendings: list[int] = []
    try:
        async with httpx.AsyncClient(headers=auth, timeout=10) as client:
            sent = 0
            started = time.perf_counter()
            deadline = started + seconds

            async def sample() -> dict:
                return (await client.get(f"{web.url}/api/v1/stats")).json()

            async def sampler():
                while time.perf_counter() < deadline:
                    stats = await sample()
                    lags.append(stats["persistence"]["lag_seconds"])
                    pendings.append(stats["persistence"]["pending"])
                    await asyncio.sleep(0.1)

            sampling = asyncio.create_task(sampler())

            async def publisher():
                nonlocal sent
                while time.perf_counter() < deadline:
                    if sent >= int((time.perf_counter() - started) * rate):
                        await asyncio.sleep(0.005)
                        continue
                    sent += batch
                    events = [{"topic": "bench", "data": {"n": sent + i}} for i in range(batch)]
                    response = await client.post(
                        f"{web.url}/api/v1/events/batch", json={"events": events}
                    )
                    assert response.status_code == 202, response.text

            await asyncio.gather(*(publisher() for _ in range(concurrency)))
            published_for = time.perf_counter() - started
            await sampling
            drain_started = time.perf_counter()
            drain_deadline = drain_started + 120
            stats = await sample()
            while stats["events"]["persisted"] < sent and time.perf_counter() < drain_deadline:
                await asyncio.sleep(0.05)
                stats = await sample()
            drained_in = time.perf_counter() - drain_started
            finished = time.perf_counter() - started
        return {
            "engine": engine,
            "published": sent,
            "publish_rate": sent / published_for,
            "persisted": stats["events"]["persisted"],
            "written_per_s": stats["events"]["persisted"] / finished,
            "lag_p50": statistics.median(lags) if lags else 0.0,
            "lag_max": max(lags, default=0.0),
            "pending_max": max(pendings, default=0),
            "drain_s": drained_in,
        }
    finally:
        for process in processes:
            process.stop()
        if database:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=20, help="events per publish request")
    parser.add_argument("--concurrency", type=int, default=4, help="publishers at once")
    parser.add_argument("--engines", default="sqlite,postgres")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines.split(","):
            rows.append(
                asyncio.run(
                    run(engine, args.rate, args.seconds, args.batch, args.concurrency, Path(tmp))
                )
            )
    header = (
        f"{'engine':10} {'published':>9} {'pub/s':>8} {'persisted':>9} {'written/s':>9} "
        f"{'lag p50':>8} {'lag max':>8} {'pending max':>11} {'drain s':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['engine']:10} {r['published']:9d} {r['publish_rate']:8.0f} {r['persisted']:9d} "
            f"{r['written_per_s']:9.0f} {r['lag_p50']:8.3f} {r['lag_max']:8.3f} "
            f"{r['pending_max']:11d} {r['drain_s']:8.2f}"
        )


if __name__ == "__main__":
    main()
