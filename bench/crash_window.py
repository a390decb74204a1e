"""What a SIGKILL costs the embedded default: events answered 202 that never reached SQLite.

The embedded log writer queues accepted events in memory and writes them in batches, at most
EVENTHUB_PERSIST_LINGER (50 ms) after they arrive; a process killed outright loses what was
queued and not yet committed. This starts the Procfile's web process (SQLite, no Redis),
publishes at a steady rate from several clients, SIGKILLs the process mid-stream, starts it
again on the same database and counts the accepted events missing from the log. The window is
lost events / rate: how much of the last moment before a kill the log may lack.

    .venv/bin/python bench/crash_window.py [--rates 200,1000] [--runs 5] [--linger 0.05]
"""

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.processes import Process, base_env, manage

CLIENTS = 8


async def publish_until_killed(
    url: str, key: str, rate: float, accepted: list[str], stop: asyncio.Event
) -> None:
    """Publishes at `rate` events/s over CLIENTS connections until `stop`; records each 202."""
    interval = CLIENTS / rate
    headers = {"Authorization": f"Bearer {key}"}

    async def one_client(offset: float) -> None:
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            next_at = time.monotonic() + offset
            while not stop.is_set():
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
                try:
                    response = await client.post(
                        f"{url}/api/v1/events", json={"topic": "t", "data": 1}, headers=headers
                    )
                except httpx.HTTPError:
                    return  # the process is gone
                if response.status_code == 202:
                    accepted.append(response.json()["id"])

    await asyncio.gather(*(one_client(i * interval / CLIENTS) for i in range(CLIENTS)))


def logged_ids(url: str, key: str) -> set[str]:
    ids, next_url = set(), f"{url}/api/v1/events?limit=1000"
    with httpx.Client(timeout=10, trust_env=False) as client:
        while next_url:
            page = client.get(next_url, headers={"Authorization": f"Bearer {key}"}).json()
            ids |= {e["id"] for e in page["results"]}
            next_url = page["next"]
    return ids


async def one_run(env: dict, key: str, workdir: Path, rate: float, seconds: float) -> int:
    web = Process("web", env, workdir).start()
    accepted: list[str] = []
    stop = asyncio.Event()
    publishing = asyncio.ensure_future(publish_until_killed(web.url, key, rate, accepted, stop))
    await asyncio.sleep(seconds)
    web.proc.send_signal(signal.SIGKILL)
    web.proc.wait(timeout=15)
    stop.set()
    await publishing
    again = Process("web", env, workdir).start()
    try:
        missing = set(accepted) - logged_ids(again.url, key)
    finally:
        again.stop()
    return len(missing)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="200,1000", help="events/s, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="publishing before the kill")
    parser.add_argument("--linger", default="0.05", help="EVENTHUB_PERSIST_LINGER")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = base_env(
            DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
            EVENTHUB_PERSIST_LINGER=args.linger,
            EVENTHUB_KEY_CACHE_SECONDS="60",
        )
        manage(env, "migrate", "--no-input")
        manage(env, "create_tenant", "bench")
        key = manage(env, "create_api_key", "bench").strip().splitlines()[-1]
        print(f"embedded default (SQLite), linger {args.linger}s, {CLIENTS} clients, "
              f"SIGKILL after {args.seconds}s, {args.runs} runs per rate")  # fmt: skip
        for rate in (float(r) for r in args.rates.split(",")):
            lost = [await one_run(env, key, workdir, rate, args.seconds) for _ in range(args.runs)]
            windows = [1000 * n / rate for n in lost]
            print(
                f"rate {rate:>6.0f}/s  lost per kill: {lost}  window ms: "
                f"median {statistics.median(windows):.0f}, max {max(windows):.0f}"
            )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
