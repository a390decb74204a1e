"""Prints what presence costs: join / leave latency, and the server's CPU per connect and
disconnect of a crowd of users, with and without presence, on one hub.

    .venv/bin/python bench/presence.py [--users 1000] [--concurrency 100] [--samples 10]
                                       [--redis redis://127.0.0.1:6379/13]

Starts one daphne on the embedded defaults (or, with --redis, on that Redis: a db of its own,
flushed before and after), with a 1 s presence grace. Latency: a watcher with `presence=1` on
`room`; a token holder connects (until the watcher's join frame) and disconnects (until its leave
frame, minus the grace), --samples times. Cost: --users token holders (a user each) connect,
--concurrency at a time, and then all go, three ways in the same run: to the pattern `room*`
(not present anywhere: the baseline), to the exact topic `room` (counted in presence), and to
`room` with `presence=1` (also a snapshot in each welcome and a join / leave frame to everyone
else: n² frames in all). Prints connects/s, the server's CPU ms per connect and per disconnect
(until presence is empty after the grace), and each as a ratio to the baseline. Loopback only;
every wait is bounded.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.embedded import embedded_hub, proc_cpu

GRACE = 1.0


async def tokens(url: str, key: str, users: list[str]) -> list[str]:
    gate = asyncio.Semaphore(20)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as client:

        async def one(user: str) -> str:
            async with gate:
                response = await client.post(
                    f"{url}/api/v1/tokens",
                    json={"topics": ["room*"], "user": user, "info": {"n": user}},
                )
                response.raise_for_status()
                return response.json()["token"]

        return list(await asyncio.gather(*(one(u) for u in users)))


async def open_ws(ws_url: str, token: str, topics: str, presence: bool):
    params = {"token": token, "topics": topics}
    if presence:
        params["presence"] = "1"
    ws = await websockets.connect(
        f"{ws_url}/ws/v1/events?{urlencode(params)}", ping_interval=None, max_queue=None
    )
    await asyncio.wait_for(ws.recv(), 10)  # the welcome
    return ws


async def frame_of(ws, kind: str, user: str) -> float:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame.get("type") == kind and frame.get("user") == user:
            return time.perf_counter()


async def latency(ws_url: str, watcher_token: str, holder_tokens: list[str]) -> tuple[list, list]:
    watcher = await open_ws(ws_url, watcher_token, "room", True)
    joins, leaves = [], []
    try:
        for i, token in enumerate(holder_tokens):
            started = time.perf_counter()
            holder = await open_ws(ws_url, token, "room", False)
            joins.append((await frame_of(watcher, "join", f"s{i}")) - started)
            started = time.perf_counter()
            await holder.close()
            leaves.append((await frame_of(watcher, "leave", f"s{i}")) - started - GRACE)
    finally:
        await watcher.close()
    return joins, leaves


async def present(client: httpx.AsyncClient, url: str) -> int:
    response = await client.get(f"{url}/api/v1/presence", params={"topic": "room"})
    return response.json()["connections"]


async def crowd(
    web, key: str, tokens_: list[str], topics: str, presence: bool, concurrency: int, stay: int = 0
):
    """Connects every token, then closes them all; returns (connects/s, CPU ms per connect,
    CPU ms per disconnect)."""
    gate = asyncio.Semaphore(concurrency)
    opened = []

    async def one(token: str) -> None:
        async with gate:
            opened.append(await open_ws(web.ws_url, token, topics, presence))

    cpu0 = proc_cpu(web.proc.pid)
    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(t) for t in tokens_)), 300)
    wall = time.perf_counter() - started
    cpu1 = proc_cpu(web.proc.pid)
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as client:
        await asyncio.sleep(GRACE)
        for _ in range(600):  # at most a minute more
            if await present(client, web.url) <= stay:
                break
            await asyncio.sleep(0.1)
    cpu2 = proc_cpu(web.proc.pid)
    n = len(tokens_)
    return n / wall, (cpu1 - cpu0) / n * 1000, (cpu2 - cpu1) / n * 1000


FIVE = "room,room.a,room.b,room.c,room.d"
WATCHERS = 10
EVERYONE_AT_MOST = 200  # everyone with presence=1 is n² frames: a smaller crowd


def run(args, settings: dict[str, str], label: str) -> None:
    with embedded_hub(EVENTHUB_PRESENCE_GRACE=str(GRACE), **settings) as (web, key):
        users = [f"u{i}" for i in range(args.users)]
        samples = [f"s{i}" for i in range(args.samples)]
        watchers = [f"w{i}" for i in range(WATCHERS)]
        all_tokens = asyncio.run(tokens(web.url, key, [*users, *samples, *watchers]))
        crowd_tokens = all_tokens[: args.users]
        sample_tokens = all_tokens[args.users : args.users + args.samples]
        watcher_tokens = all_tokens[args.users + args.samples :]
        joins, leaves = asyncio.run(latency(web.ws_url, watcher_tokens[0], sample_tokens))
        print(f"[{label}] join latency ms: median {statistics.median(joins) * 1000:.1f}, "
              f"max {max(joins) * 1000:.1f}; leave after the grace ms: median "
              f"{statistics.median(leaves) * 1000:.1f}, max {max(leaves) * 1000:.1f}")  # fmt: skip
        asyncio.run(crowd(web, key, crowd_tokens[:200], "room*", False, args.concurrency))  # warm
        print(f"[{label}] {'users':>5} {'subscription':>24} {'conn/s':>7} {'CPU ms/conn':>11} "
              f"{'CPU ms/disc':>11} {'ratio conn':>10} {'ratio disc':>10}")  # fmt: skip
        base = None
        everyone = crowd_tokens[: min(args.users, EVERYONE_AT_MOST)]
        for name, group, topics, presence, watched in (
            ("room* (none)", crowd_tokens, "room*", False, False),
            ("room", crowd_tokens, "room", False, False),
            ("5 exact topics", crowd_tokens, FIVE, False, False),
            (f"room, {WATCHERS} watch", crowd_tokens, "room", False, True),
            ("room* (none)", everyone, "room*", False, False),
            ("room, all presence=1", everyone, "room", True, False),
        ):
            rate, per_conn, per_disc = asyncio.run(
                watched_crowd(web, key, watcher_tokens if watched else [], group, topics,
                              presence, args.concurrency)
            )  # fmt: skip
            if topics == "room*":
                base = (per_conn, per_disc)
            ratios = f"{per_conn / base[0]:>10.2f} {per_disc / base[1]:>10.2f}"
            print(f"[{label}] {len(group):>5} {name:>24} {rate:>7.0f} {per_conn:>11.2f} "
                  f"{per_disc:>11.2f} {ratios}")  # fmt: skip
            time.sleep(1)


async def watched_crowd(web, key, watcher_tokens, group, topics, presence, concurrency):
    """`crowd`, with watchers on `room` with presence=1 (reading every frame) meanwhile."""
    watchers = [await open_ws(web.ws_url, t, "room", True) for t in watcher_tokens]
    try:
        return await crowd(web, key, group, topics, presence, concurrency, len(watchers))
    finally:
        await asyncio.gather(*(w.close() for w in watchers), return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--redis", default=None, help="also run on this Redis URL (a spare db)")
    args = parser.parse_args()
    run(args, {}, "embedded")
    if args.redis:
        import redis

        redis.Redis.from_url(args.redis).flushdb()
        try:
            run(args, {"REDIS_URL": args.redis}, "redis")
        finally:
            redis.Redis.from_url(args.redis).flushdb()


if __name__ == "__main__":
    main()
