"""Prints how fast the hub admits a crowd of WebSocket subscribers (a reconnect storm).

    .venv/bin/python bench/connect.py [--connections 1000] [--concurrency 100] [--runs 2]

Starts one daphne with the embedded defaults (SQLite in a temporary directory), creates a tenant,
a key and a subscriber token, then opens --connections WebSockets, --concurrency at a time, each
waiting for its welcome frame; first with the API key, then all with the one token, as browsers
reconnecting after a deploy do. Prints connections/s and the server's CPU per connection (open,
welcome and close). Loopback only; every loop is bounded in count and time.
"""

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.embedded import embedded_hub, peak_rss_mb, proc_cpu


async def _storm(ws_url: str, key: str, token: str | None, n: int, concurrency: int) -> float:
    """Opens `n` subscribers, `concurrency` at a time; returns the seconds it took."""
    gate = asyncio.Semaphore(concurrency)
    opened = []
    query = f"?token={token}" if token else ""
    headers = {} if token else {"Authorization": f"Bearer {key}"}

    async def one() -> None:
        async with gate:
            ws = await websockets.connect(
                f"{ws_url}/ws/v1/events{query}", additional_headers=headers, ping_interval=None
            )
            await asyncio.wait_for(ws.recv(), 10)  # the welcome
            opened.append(ws)

    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 120)
        return time.perf_counter() - started
    finally:
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with embedded_hub() as (web, key):
        token = httpx.post(
            f"{web.url}/api/v1/tokens",
            json={"topics": ["*"]},
            headers={"Authorization": f"Bearer {key}"},
        ).json()["token"]
        asyncio.run(_storm(web.ws_url, key, None, 50, 10))  # warm up
        print(f"{'credential':>10} {'conn/s':>7} {'CPU ms/conn':>11}")
        for name, credential in (("key", None), ("token", token)):
            for _ in range(args.runs):
                cpu0 = proc_cpu(web.proc.pid)
                wall = asyncio.run(
                    _storm(web.ws_url, key, credential, args.connections, args.concurrency)
                )
                cpu = proc_cpu(web.proc.pid) - cpu0
                per_conn = cpu / args.connections * 1000
                print(f"{name:>10} {args.connections / wall:>7.0f} {per_conn:>11.2f}")
                time.sleep(1)  # closes settle before the next run
        print(f"server peak RSS: {peak_rss_mb(web.proc.pid):.0f} MB")


if __name__ == "__main__":
    main()
