"""Soak: publishers and churning subscribers for a set time, with one line a minute per layout,
so that drift shows: each server process's memory, the serving loops' tasks, the connections
the hubs hold, p99 publish→delivery latency, and events lost or delivered twice.

    .venv/bin/python bench/soak.py                              # 10 minutes on each layout
    .venv/bin/python bench/soak.py --minutes 2 --layout embedded

Layouts:
  embedded  one daphne on the defaults (SQLite in a temporary directory, in-process layer)
  procfile  the Procfile's processes: two `web` (daphne) and one `worker`, on a redis-server of
            the script's own (a free port, no persistence) and a PostgreSQL database of its own
            on 127.0.0.1:5432 (user postgres, trust auth), dropped at the end

Workload: --publishers (2) each POST one event every 1/--rate seconds (10/s each) to the first
web process. --subscribers (40), half WebSocket and half SSE, spread over the web processes,
each connects, reads for 1-5 s, leaves (a clean close or a dropped connection, at random) and
reconnects with its last event id, for the whole run. Each takes every event of the tenant, so
an accepted seq that it skips is lost, one it gets twice is duplicated, and a welcome with
`recovered: false` counts as unrecovered. Latency is from just before the POST to receipt, for
the events published while the subscriber was connected.

Each minute, per layout: rss (MB, /proc VmRSS) of each process; tasks (eventhub_asyncio_tasks)
and connections (eventhub_hub_subscribers) of each web process, from its /metrics, read at the
minute mark; and over the minute: deliveries, p99 latency, lost, duplicated, unrecovered,
reconnects, errors (publishes not answered 202, subscribers that failed to connect). Exit code 1
when an event was lost or duplicated. Loopback only; every wait is bounded; the processes are
always stopped, the redis-server too, and the database dropped.
"""

import argparse
import asyncio
import bisect
import contextlib
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embedded import status_mb  # noqa: E402
from tests.clients import scrape, sse_open, ws_connect  # noqa: E402
from tests.processes import Process, base_env, free_port, manage  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432"
READ_SECONDS = (1.0, 5.0)
GAP_SETTLE_SECONDS = 5.0  # a gap is counted once every publish before it has been answered


@dataclass
class Layout:
    name: str
    webs: list[Process]
    processes: dict[str, Process]  # by label, for their memory
    key: str


@dataclass
class Tally:
    """What happened since the last minute mark."""

    latencies: list[float] = field(default_factory=list)
    deliveries: int = 0
    duplicated: int = 0
    unrecovered: int = 0
    reconnects: int = 0
    errors: int = 0


@dataclass
class Run:
    stop_at: float
    tally: Tally = field(default_factory=Tally)
    accepted: set[int] = field(default_factory=set)  # seqs answered 202
    gaps: list[tuple[float, int, int]] = field(default_factory=list)  # (seen at, after, before)
    lost_total: int = 0
    duplicated_total: int = 0

    def lost_in_gaps(self, settled_before: float) -> int:
        """Resolves the gaps seen before `settled_before`: the accepted seqs strictly between
        the two seqs a subscriber got one after the other."""
        ready = [g for g in self.gaps if g[0] < settled_before]
        self.gaps = [g for g in self.gaps if g[0] >= settled_before]
        seqs = sorted(self.accepted)
        return sum(
            bisect.bisect_left(seqs, before) - bisect.bisect_right(seqs, after)
            for _, after, before in ready
        )


# Layouts -----------------------------------------------------------------------------------


def _tenant_key(env: dict[str, str]) -> str:
    manage(env, "migrate", "--no-input")
    manage(env, "create_tenant", "soak")
    return manage(env, "create_api_key", "soak").strip().splitlines()[-1]


@contextlib.contextmanager
def embedded(workdir: Path) -> Iterator[Layout]:
    env = base_env(
        DATABASE_URL=f"sqlite:///{workdir / 'soak.sqlite3'}", EVENTHUB_KEY_CACHE_SECONDS="2"
    )
    key = _tenant_key(env)
    web = Process("web", env, workdir)
    try:
        web.start()
        yield Layout("embedded", [web], {"web": web}, key)
    finally:
        web.stop()


@contextlib.contextmanager
def own_redis(workdir: Path) -> Iterator[str]:
    """A redis-server of our own on a free port; never the machine's shared one."""
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
         "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            assert server.poll() is None, f"redis-server exited with {server.returncode}"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "redis-server did not start within 10 s"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextlib.contextmanager
def own_database() -> Iterator[str]:
    name = f"eventhub_soak_{secrets.token_hex(4)}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def procfile(workdir: Path) -> Iterator[Layout]:
    with own_redis(workdir) as redis_url, own_database() as database_url:
        env = base_env(
            REDIS_URL=redis_url, DATABASE_URL=database_url, EVENTHUB_KEY_CACHE_SECONDS="2"
        )
        key = _tenant_key(env)
        processes = {
            "web1": Process("web", env, workdir),
            "web2": Process("web", env, workdir),
            "worker": Process("worker", env, workdir),
        }
        try:
            for process in processes.values():
                process.start()
            yield Layout("procfile", [processes["web1"], processes["web2"]], processes, key)
        finally:
            # The web processes first: they flush to the stream the worker still reads.
            for label in ("web1", "web2", "worker"):
                processes[label].stop()


# Load --------------------------------------------------------------------------------------


async def publisher(number: int, web: Process, key: str, rate: float, run: Run) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=10, trust_env=False) as client:
        start, n = time.monotonic(), 0
        while (due := start + n / rate) < run.stop_at:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            body = {"topic": "soak", "data": {"p": number, "n": n, "sent": time.time()}}
            n += 1
            try:
                response = await client.post(f"{web.url}/api/v1/events", json=body)
            except httpx.HTTPError:
                run.tally.errors += 1
                continue
            if response.status_code == 202:
                run.accepted.add(response.json()["seq"])
            else:
                run.tally.errors += 1


async def subscriber(number: int, web: Process, key: str, websocket: bool, run: Run) -> None:
    """Connects, reads for a while, leaves and comes back with its last id, until the end."""
    rng = random.Random(number)
    last_id: str | None = None
    last_seq: int | None = None
    while time.monotonic() < run.stop_at:
        connected_at = time.time()
        client = None
        try:
            if websocket:
                client = await ws_connect(web.ws_url, key, last_event_id=last_id)
                welcome = await client.welcome(10)
                queue = client.frames
            else:
                headers = {"Last-Event-ID": last_id} if last_id else None
                client = await sse_open(web.url, key, headers=headers)
                assert client.response.status_code == 200, client.response.status_code
                welcome = await client.welcome(10)
                queue = client.messages
            run.tally.reconnects += 1
            if last_id is not None and not welcome["recovered"]:
                run.tally.unrecovered += 1
                last_seq = None  # nothing to hold it to: start over from what comes
            until = min(run.stop_at, time.monotonic() + rng.uniform(*READ_SECONDS))
            while (left := until - time.monotonic()) > 0:
                try:
                    frame = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                event = frame if websocket else frame["data"]
                if event.get("type") != "event":
                    continue
                seq = event["seq"]
                if last_seq is not None and seq <= last_seq:
                    run.tally.duplicated += 1
                    continue
                if last_seq is not None and seq > last_seq + 1:
                    run.gaps.append((time.monotonic(), last_seq, seq))
                last_seq, last_id = seq, event["id"]
                run.tally.deliveries += 1
                if event["data"]["sent"] >= connected_at:
                    run.tally.latencies.append(time.time() - event["data"]["sent"])
        except Exception:
            run.tally.errors += 1
            await asyncio.sleep(0.5)  # as a client's backoff: not a storm of failures
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    if websocket and rng.random() < 0.5:
                        client.abort()  # gone without a close frame
                        await client.closed(5)
                    else:
                        await asyncio.wait_for(client.close(), 5)


# Report ------------------------------------------------------------------------------------


def _p99_ms(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000 if ordered else 0.0


async def minute_line(layout: Layout, minute: int, run: Run, client: httpx.AsyncClient) -> str:
    tally, run.tally = run.tally, Tally()
    lost = run.lost_in_gaps(time.monotonic() - GAP_SETTLE_SECONDS)
    run.lost_total += lost
    run.duplicated_total += tally.duplicated
    rss = " ".join(f"{label} {status_mb(p.proc.pid, 'VmRSS'):.1f}" for label, p in
                   layout.processes.items())  # fmt: skip
    tasks, connections = [], []
    for web in layout.webs:
        try:
            samples = await scrape(client, web.url)
            tasks.append(f"{samples['eventhub_asyncio_tasks']:.0f}")
            connections.append(f"{samples['eventhub_hub_subscribers']:.0f}")
        except (httpx.HTTPError, AssertionError, KeyError):
            tasks.append("?")
            connections.append("?")
    return (
        f"{layout.name:9} min {minute:3}  rss MB {rss}  tasks {'/'.join(tasks)}  "
        f"conns {'/'.join(connections)}  deliveries {tally.deliveries}  "
        f"p99 {_p99_ms(tally.latencies):.1f} ms  lost {lost}  dup {tally.duplicated}  "
        f"unrecovered {tally.unrecovered}  reconnects {tally.reconnects}  errors {tally.errors}"
    )


async def soak(layout: Layout, args: argparse.Namespace) -> Run:
    start = time.monotonic()
    run = Run(stop_at=start + args.minutes * 60)
    webs = layout.webs
    tasks = [
        asyncio.ensure_future(publisher(p, webs[0], layout.key, args.rate, run))
        for p in range(args.publishers)
    ]
    tasks += [
        # Each web process gets both kinds.
        asyncio.ensure_future(
            subscriber(s, webs[s % len(webs)], layout.key, (s // len(webs)) % 2 == 0, run)
        )
        for s in range(args.subscribers)
    ]
    try:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            for minute in range(1, args.minutes + 1):
                await asyncio.sleep(max(0.0, start + minute * 60 - time.monotonic()))
                if minute == args.minutes:  # the last gaps: once the last publishes are in
                    await asyncio.wait(tasks, timeout=30)
                    await asyncio.sleep(GAP_SETTLE_SECONDS)
                print(await minute_line(layout, minute, run, client), flush=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--layout", choices=("embedded", "procfile", "both"), default="both")
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=10.0, help="events/s of each publisher")
    parser.add_argument("--subscribers", type=int, default=40)
    args = parser.parse_args()
    layouts = {"embedded": embedded, "procfile": procfile}
    names = list(layouts) if args.layout == "both" else [args.layout]
    exact = True
    for name in names:
        with tempfile.TemporaryDirectory() as workdir, layouts[name](Path(workdir)) as layout:
            run = asyncio.run(soak(layout, args))
        print(f"{name:9} total: lost {run.lost_total}  dup {run.duplicated_total}", flush=True)
        exact = exact and not run.lost_total and not run.duplicated_total
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
