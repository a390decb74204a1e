"""Prints the cost of the publish path: latency of one POST and requests/s under concurrency.

    .venv/bin/python bench/publish.py [--requests 1000] [--concurrency 1,8] [--batch 1]
        [--idempotent]

Starts a bare ASGI app on daphne (bench/bare_asgi.py: a 202 and nothing else), the floor, then
one daphne with the embedded defaults (SQLite in a temporary directory) with a tenant and a
key; on each it warms up, then for each concurrency level sends --requests POSTs to
`/api/v1/events` (or `/batch` with --batch > 1) over kept-alive HTTP/1.1 connections and prints
p50/p99 latency, requests/s and the server's CPU per request, and Eventhub's ratios to the
floor. No subscriber is connected: this
is the ingest path alone. Loopback only; every loop is bounded in count and time.
"""

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.embedded import bare_daphne, embedded_hub, peak_rss_mb, proc_cpu


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def _level(url: str, key: str, n: int, concurrency: int, batch: int, idem: bool, pid: int):
    path = "/api/v1/events/batch" if batch > 1 else "/api/v1/events"
    one = {"topic": "bench", "type": "tick", "data": {"n": 1, "text": "x" * 100}}
    body = {"events": [one] * batch} if batch > 1 else one
    latencies: list[float] = []
    failures = 0
    queue = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=10
    ) as client:

        async def sender() -> None:
            nonlocal failures
            for _ in queue:
                headers = {"Idempotency-Key": uuid.uuid4().hex} if idem else {}
                t0 = time.perf_counter()
                response = await client.post(path, json=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 202:
                    failures += 1

        cpu0, t0 = proc_cpu(pid), time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(sender() for _ in range(concurrency))), 300)
        wall, cpu = time.perf_counter() - t0, proc_cpu(pid) - cpu0
    return {
        "concurrency": concurrency,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
        "req_s": n / wall,
        "events_s": n * batch / wall,
        "cpu_ms_per_req": cpu / n * 1000,
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--idempotent", action="store_true", help="send an Idempotency-Key")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    def run(url: str, key: str, pid: int) -> dict[int, dict]:
        asyncio.run(_level(url, key, 100, 4, args.batch, args.idempotent, pid))  # warm
        return {
            level: asyncio.run(
                _level(url, key, args.requests, level, args.batch, args.idempotent, pid)
            )
            for level in levels
        }

    with bare_daphne() as (url, pid):
        floor = run(url, "-", pid)
    with embedded_hub() as (web, key):
        hub = run(web.url, key, web.proc.pid)
        rss = peak_rss_mb(web.proc.pid)
    print(
        f"{'server':<10} {'conc':>4} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'events/s':>9} "
        f"{'CPU ms/req':>10} {'fail':>4}"
    )
    for name, rows in (("bare ASGI", floor), ("Eventhub", hub)):
        for r in rows.values():
            print(
                f"{name:<10} {r['concurrency']:>4} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                f"{r['req_s']:>7.0f} {r['events_s']:>9.0f} {r['cpu_ms_per_req']:>10.2f} "
                f"{r['failures']:>4}"
            )
    for level in levels:
        print(
            f"concurrency {level}: p50 {hub[level]['p50_ms'] / floor[level]['p50_ms']:.2f}x the "
            f"bare app's, requests/s {hub[level]['req_s'] / floor[level]['req_s']:.2f}x"
        )
    print(f"Eventhub server peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
