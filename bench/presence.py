"""Prints what presence costs: join and leave latency as another subscriber sees them, and the
server's CPU per connect and disconnect of 1000 users with presence against the same crowd
without it, on the embedded default and with Redis.

    .venv/bin/python bench/presence.py [--users 1000] [--samples 20] [--engines embedded,redis]

For each engine it starts one daphne (SQLite in a temporary directory; with `redis`, a
redis-server of its own on a free port as REDIS_URL) with EVENTHUB_PRESENCE_GRACE=1, makes a
tenant, a key and one token per user (`user` and `info` claims), then:
- latency: an observer subscribed with `presence=1` to the topic `room`; --samples times, one
  user connects (the time to the observer's `join`, from the user's connect) and disconnects
  (the time to its `leave`, minus the grace);
- cost: --users users connect to `room` (present) 100 at a time, each waiting for its welcome,
  then all disconnect; the same with the pattern `room.*` (not an exact topic: no presence).
  The server's CPU per connect and per disconnect, and the ratio of the two runs.
Loopback only; every phase is bounded in time.
"""

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embedded import proc_cpu  # noqa: E402
from tests.processes import Process, base_env, free_port, manage  # noqa: E402

GRACE = 1.0


@contextlib.contextmanager
def _hub(engine: str):
    """(web process, key) of a hub on `engine`; everything stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="eventhub-presence-") as workdir:
        redis_proc = None
        extra = {}
        if engine == "redis":
            port = free_port()
            redis_proc = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                stdout=subprocess.DEVNULL,
                cwd=workdir,
            )
            extra["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        web = None
        try:
            env = base_env(
                DATABASE_URL=f"sqlite:///{Path(workdir) / 'db.sqlite3'}",
                EVENTHUB_PRESENCE_GRACE=str(GRACE),
                EVENTHUB_KEY_CACHE_SECONDS="2",
                **extra,
            )
            manage(env, "migrate", "--no-input")
            manage(env, "create_tenant", "bench")
            key = manage(env, "create_api_key", "bench").strip().splitlines()[-1]
            web = Process("web", env, Path(workdir)).start()
            yield web, key
        finally:
            if web is not None:
                web.stop()
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(10)


async def _tokens(url: str, key: str, n: int) -> list[str]:
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:

        async def one(i: int) -> str:
            async with gate:
                body = {
                    "topics": ["room", "room.*"],
                    "ttl": 3600,
                    "user": f"user-{i}",
                    "info": {"name": f"User {i}"},
                }
                response = await client.post("/api/v1/tokens", json=body)
                response.raise_for_status()
                return response.json()["token"]

        return await asyncio.gather(*(one(i) for i in range(n)))


async def _open(ws_url: str, topics: str, token: str, query: str = ""):
    ws = await websockets.connect(
        f"{ws_url}/ws/v1/events?topics={topics}&token={token}{query}",
        ping_interval=None,
        open_timeout=30,
    )
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def _frame(ws, kind: str, user: str, within: float = 10.0) -> float:
    """Waits for the `kind` frame of `user`; returns when it came (perf_counter)."""
    deadline = time.perf_counter() + within
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.perf_counter()))
        if frame.get("type") == kind and frame.get("user") == user:
            return time.perf_counter()


async def _latency(ws_url: str, observer_token: str, tokens: list[str]) -> tuple[list, list]:
    observer, _ = await _open(ws_url, "room", observer_token, "&presence=1")
    joins, leaves = [], []
    try:
        for i, token in enumerate(tokens):
            user = f"user-{i + 1}"
            started = time.perf_counter()
            ws, _ = await _open(ws_url, "room", token)
            joins.append(await _frame(observer, "join", user) - started)
            await ws.close()
            closed = time.perf_counter()
            leaves.append(await _frame(observer, "leave", user, GRACE + 10) - closed - GRACE)
    finally:
        await observer.close()
    return joins, leaves


async def _crowd(ws_url: str, topics: str, tokens: list[str], pid: int) -> tuple[float, float]:
    """Server CPU ms per connect and per disconnect of `tokens`' holders on `topics`."""
    gate = asyncio.Semaphore(100)

    async def one(token: str):
        async with gate:
            return (await _open(ws_url, topics, token))[0]

    cpu0 = proc_cpu(pid)
    conns = await asyncio.wait_for(asyncio.gather(*(one(t) for t in tokens)), 300)
    await asyncio.sleep(1.0)  # what connecting leaves to do settles
    cpu1 = proc_cpu(pid)
    await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in conns)), 120)
    await asyncio.sleep(GRACE + 2.0)  # leaves after the grace
    cpu2 = proc_cpu(pid)
    return (cpu1 - cpu0) * 1000 / len(tokens), (cpu2 - cpu1) * 1000 / len(tokens)


async def _engine(engine: str, users: int, samples: int) -> dict:
    with _hub(engine) as (web, key):
        assert web.proc is not None
        tokens = await _tokens(web.url, key, max(users, samples + 1))
        joins, leaves = await _latency(web.ws_url, tokens[0], tokens[1 : samples + 1])
        await asyncio.sleep(GRACE + 1)
        absent = await _crowd(web.ws_url, "room.*", tokens[:users], web.proc.pid)
        present = await _crowd(web.ws_url, "room", tokens[:users], web.proc.pid)
    return {"joins": joins, "leaves": leaves, "absent": absent, "present": present}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--engines", default="embedded,redis")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "redis" in engines and not shutil.which("redis-server"):
        print("redis-server is not installed", file=sys.stderr)
        return 1
    results = {e: asyncio.run(_engine(e, args.users, args.samples)) for e in engines}
    print(f"\npresence, {args.users} users; latencies in ms over {args.samples} samples")
    print(
        f"{'engine':<9} {'join p50':>8} {'join max':>8} {'leave-grace p50':>15} {'max':>6} "
        f"{'CPU/connect':>11} {'(no presence)':>13} {'ratio':>6} "
        f"{'CPU/disconnect':>14} {'(no presence)':>13} {'ratio':>6}"
    )
    for engine, r in results.items():
        (a_con, a_dis), (p_con, p_dis) = r["absent"], r["present"]
        print(
            f"{engine:<9} {statistics.median(r['joins']) * 1000:>8.1f} "
            f"{max(r['joins']) * 1000:>8.1f} {statistics.median(r['leaves']) * 1000:>15.1f} "
            f"{max(r['leaves']) * 1000:>6.1f} {p_con:>11.2f} {a_con:>13.2f} "
            f"{p_con / a_con:>6.2f} {p_dis:>14.2f} {a_dis:>13.2f} {p_dis / a_dis:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
