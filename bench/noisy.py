"""Noisy neighbours: a quiet tenant's publish→delivery latency alone and under each attack of
another tenant on the same process, with the server's memory growth.

    .venv/bin/python bench/noisy.py                    # every attack, 10 s each
    .venv/bin/python bench/noisy.py --seconds 5 --attacks big-bodies,replay

Each phase starts a fresh daphne on the embedded defaults (SQLite in a temporary directory, one
process) with two tenants, `quiet` and `noisy`. The quiet tenant has 20 WebSocket subscribers
and publishes one event every 50 ms; every delivery's latency is the time from just before its
POST to its receipt. Meanwhile, in processes of their own, the noisy tenant attacks:

  big-bodies   3 clients at a time POST 4 MiB of nested JSON, `{"topic":"x","data":[{},{},…]}`,
               to /events and as one event of a /batch (all are refused with 413)
  frames       WebSocket clients send 1 MiB frames (closed with 1009) and reconnect, and
               others send 4 KiB JSON frames as fast as they are answered
  replay       token holders reconnect again and again with an old last_event_id over a log of
               32 KiB events (most of the gap from the persisted log); a third of them never read
  patterns     200 connections of 100 distinct prefix patterns each, while the noisy tenant
               publishes 200 events/s to topics none of them match
  burst        2000 subscribers of the noisy tenant, and bursts of 50 events every 2 s (the
               quiet tenant is measured once all 2000 are connected)

For each phase it prints the quiet tenant's p50/p99, the p99 as a ratio of the quiet tenant's
alone, events lost (every subscriber must get every event), 5xx answers seen by anyone, and the
server's resident-memory growth during the phase. Goals (issue 9): p99 within 2x of alone,
nothing lost, no 5xx, growth under 100 MB. The attackers' processes run at nice 10, so that
on a small machine the load generators do not starve the server and the quiet client of CPU.
The server's `eventhub_loop_stall_seconds` histogram gives the loop stalls of each phase (they
include time the process was not scheduled at all). Loopback only; every loop is bounded in
count and time; the server is always stopped. Exit code 1 when an event was lost or a 5xx seen.
"""

import argparse
import asyncio
import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embedded import status_mb  # noqa: E402
from tests.processes import Process, base_env, manage  # noqa: E402

ATTACKS = ("big-bodies", "frames", "replay", "patterns", "burst")
QUIET_SUBSCRIBERS = 20
QUIET_EVERY = 0.05
REPLAY_EVENTS = 480
REPLAY_EVENT_BYTES = 32_000


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory of a process now, in MB (Linux /proc VmRSS); NaN once it is gone."""
    return status_mb(pid, "VmRSS")


class RssSampler:
    """Samples a process's resident memory every 50 ms in a thread; `growth` is the peak over
    the first sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mb(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth(self) -> float:
        return max(self.samples) - self.samples[0] if self.samples else float("nan")


@contextlib.contextmanager
def server(extra_env: dict[str, str] | None = None):
    """A fresh daphne on SQLite with tenants `quiet` and `noisy`; yields (web, keys)."""
    with tempfile.TemporaryDirectory() as workdir:
        env = base_env(
            DATABASE_URL=f"sqlite:///{Path(workdir) / 'noisy.sqlite3'}",
            EVENTHUB_KEY_CACHE_SECONDS="2",
            **(extra_env or {}),
        )
        manage(env, "migrate", "--no-input")
        keys = {}
        for slug in ("quiet", "noisy"):
            manage(env, "create_tenant", slug)
            keys[slug] = manage(env, "create_api_key", slug).strip().splitlines()[-1]
        web = Process("web", env, Path(workdir)).start()
        try:
            yield web, keys
        finally:
            web.stop()


async def _drain_and_close(done: bool, all_in: asyncio.Event, readers, connections) -> None:
    """Waits (30 s at most) until every expected delivery is in, then closes the subscribers."""
    if not done:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 30)
    for reader in readers:
        reader.cancel()
    for ws in connections:
        with contextlib.suppress(Exception):
            await ws.close()


# The quiet tenant --------------------------------------------------------------------------


async def quiet_phase(web: Process, key: str, seconds: float) -> dict:
    """Publishes every QUIET_EVERY for `seconds` to QUIET_SUBSCRIBERS; returns latencies."""
    auth = {"Authorization": f"Bearer {key}"}
    sent: dict[int, float] = {}
    latencies: list[float] = []
    received = [0] * QUIET_SUBSCRIBERS
    statuses: dict[int, int] = {}
    expected = [float("inf")]
    all_in = asyncio.Event()

    async def subscriber(index: int, ws) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "ping":
                await ws.send('{"type":"pong"}')
            elif frame["type"] == "event":
                now = time.perf_counter()
                latencies.append(now - sent[frame["data"]])
                received[index] += 1
                if sum(received) >= expected[0]:
                    all_in.set()

    connections = [
        await websockets.connect(
            f"{web.ws_url}/ws/v1/events?topics=q", additional_headers=auth, ping_interval=None
        )
        for _ in range(QUIET_SUBSCRIBERS)
    ]
    for ws in connections:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "welcome"
    readers = [asyncio.ensure_future(subscriber(i, ws)) for i, ws in enumerate(connections)]
    count = int(seconds / QUIET_EVERY)
    async with httpx.AsyncClient(base_url=web.url, headers=auth, timeout=30) as client:
        start = time.perf_counter()
        for n in range(count):
            await asyncio.sleep(max(0.0, start + n * QUIET_EVERY - time.perf_counter()))
            sent[n] = time.perf_counter()
            response = await client.post("/api/v1/events", json={"topic": "q", "data": n})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    accepted = statuses.get(202, 0)
    expected[0] = accepted * QUIET_SUBSCRIBERS
    await _drain_and_close(sum(received) >= expected[0], all_in, readers, connections)
    return {
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": _pct(latencies, 0.99) * 1000,
        "lost": accepted * QUIET_SUBSCRIBERS - sum(received),
        "statuses": statuses,
    }


# Attackers (each runs in a process of its own: `noisy.py --attacker KIND`) --------------------


def _count(statuses: dict, code) -> None:
    statuses[str(code)] = statuses.get(str(code), 0) + 1


async def attack_big_bodies(url: str, ws_url: str, key: str, seconds: float) -> dict:
    spam = ",".join(["{}"] * 1_398_000)
    single = ('{"topic":"x","data":[' + spam + "]}").encode()
    batch = ('{"events":[{"topic":"x","data":[' + spam[:-3] + "]}]}").encode()
    statuses: dict = {}
    stop = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def client(body: bytes, path: str) -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            while time.monotonic() < stop:
                try:
                    response = await http.post(path, content=body)
                    _count(statuses, response.status_code)
                except httpx.HTTPError as exc:
                    _count(statuses, type(exc).__name__)

    await asyncio.gather(
        client(single, "/api/v1/events"),
        client(batch, "/api/v1/events/batch"),
        client(single, "/api/v1/events"),
    )
    return {"statuses": statuses, "body_mb": round(len(single) / 2**20, 1)}


async def attack_frames(url: str, ws_url: str, key: str, seconds: float) -> dict:
    auth = {"Authorization": f"Bearer {key}"}
    stop = time.monotonic() + seconds
    closes: dict = {}
    pongs = 0
    big = "x" * (1 << 20)
    small = json.dumps({"type": "ping", "pad": "y" * 4000})

    async def oversized() -> None:
        while time.monotonic() < stop:
            async with websockets.connect(
                f"{ws_url}/ws/v1/events",
                additional_headers=auth,
                ping_interval=None,
                max_size=None,
            ) as ws:
                await ws.recv()  # welcome
                try:
                    await ws.send(big)
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                except websockets.ConnectionClosed as closed:
                    _count(closes, closed.rcvd.code if closed.rcvd else "none")
                except TimeoutError:
                    _count(closes, "open")

    async def chatty() -> None:
        nonlocal pongs
        async with websockets.connect(
            f"{ws_url}/ws/v1/events", additional_headers=auth, ping_interval=None
        ) as ws:
            await ws.recv()
            while time.monotonic() < stop:
                await ws.send(small)
                while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "pong":
                    pass
                pongs += 1

    await asyncio.gather(*(oversized() for _ in range(3)), *(chatty() for _ in range(5)))
    return {"closes": closes, "pongs": pongs}


async def attack_replay(url: str, ws_url: str, key: str, seconds: float) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        token = (await http.post("/api/v1/tokens", json={"topics": ["*"]})).json()["token"]
        first = (await http.get("/api/v1/events", params={"limit": 1})).json()["results"][0]
    query = urlencode({"token": token, "last_event_id": first["id"]})
    stop = time.monotonic() + seconds
    stats = {"replays": 0, "replayed_events": 0, "recovered_false": 0, "closes": {}}

    async def reader() -> None:
        while time.monotonic() < stop:
            async with websockets.connect(
                f"{ws_url}/ws/v1/events?{query}", ping_interval=None, max_size=None
            ) as ws:
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if not welcome.get("recovered"):
                    stats["recovered_false"] += 1
                    continue
                got = 0
                while got < REPLAY_EVENTS - 1:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    got += frame["type"] == "event"
                stats["replays"] += 1
                stats["replayed_events"] += got

    async def stalled() -> None:
        while time.monotonic() < stop:
            try:
                async with websockets.connect(
                    f"{ws_url}/ws/v1/events?{query}",
                    ping_interval=None,
                    max_size=None,
                    max_queue=1,
                ) as ws:
                    await asyncio.sleep(min(8.0, max(0.0, stop - time.monotonic())))
                    with contextlib.suppress(websockets.ConnectionClosed):
                        while True:
                            await ws.recv()
            except websockets.ConnectionClosed as closed:
                _count(stats["closes"], closed.rcvd.code if closed.rcvd else "none")

    await asyncio.gather(*(reader() for _ in range(6)), *(stalled() for _ in range(3)))
    return stats


async def attack_patterns(url: str, ws_url: str, key: str, seconds: float) -> dict:
    auth = {"Authorization": f"Bearer {key}"}
    connections = []
    for c in range(200):
        topics = ",".join(f"p{c}.{i}.*" for i in range(100))
        connections.append(
            await websockets.connect(
                f"{ws_url}/ws/v1/events?topics={topics}",
                additional_headers=auth,
                ping_interval=None,
            )
        )
    statuses: dict = {}
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as http:
        n = 0
        start = time.monotonic()
        while time.monotonic() < stop:
            await asyncio.sleep(max(0.0, start + n / 200 - time.monotonic()))
            response = await http.post("/api/v1/events", json={"topic": f"p{n}.x", "data": n})
            _count(statuses, response.status_code)
            n += 1
    for ws in connections:
        await ws.close()
    return {"statuses": statuses, "patterns": 200 * 100}


async def attack_burst(url: str, ws_url: str, key: str, seconds: float) -> dict:
    auth = {"Authorization": f"Bearer {key}"}
    received = 0
    expected = [float("inf")]
    all_in = asyncio.Event()

    async def subscriber(ws) -> None:
        nonlocal received
        async for raw in ws:
            if raw.startswith('{"type":"event"'):
                received += 1
                if received >= expected[0]:
                    all_in.set()
            elif raw == '{"type":"ping"}':
                await ws.send('{"type":"pong"}')

    connections = []
    for start in range(0, 2000, 100):
        connections += await asyncio.gather(
            *(
                websockets.connect(
                    f"{ws_url}/ws/v1/events", additional_headers=auth, ping_interval=None
                )
                for _ in range(start, start + 100)
            )
        )
    readers = [asyncio.ensure_future(subscriber(ws)) for ws in connections]
    print(UNDER_WAY, flush=True)  # the quiet tenant is measured from here: the bursts, not the
    # connection storm before them (bench/connect.py measures that)
    statuses: dict = {}
    published = 0
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as http:
        while time.monotonic() < stop:
            events = [{"topic": "b", "data": {"n": i, "pad": "z" * 100}} for i in range(50)]
            response = await http.post("/api/v1/events/batch", json={"events": events})
            _count(statuses, response.status_code)
            published += 50 * (response.status_code == 202)
            await asyncio.sleep(2.0)
    expected[0] = published * len(connections)
    await _drain_and_close(received >= expected[0], all_in, readers, connections)
    return {"statuses": statuses, "deliveries": received, "expected": published * 2000}


ATTACKERS = {
    "big-bodies": attack_big_bodies,
    "frames": attack_frames,
    "replay": attack_replay,
    "patterns": attack_patterns,
    "burst": attack_burst,
}

# Setup per attack, in the server process's environment and before the phase starts.
SERVER_ENV = {"replay": {"EVENTHUB_REPLAY_WINDOW": "100"}}


async def fill_log(web: Process, key: str) -> None:
    """The noisy tenant's log for the replay storm: REPLAY_EVENTS events of 32 KiB, persisted."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=web.url, headers=headers, timeout=60) as http:
        for _ in range(0, REPLAY_EVENTS, 10):
            events = [{"topic": "r", "data": "r" * REPLAY_EVENT_BYTES}] * 10
            response = await http.post("/api/v1/events/batch", json={"events": events})
            assert response.status_code == 202, response.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stats = (await http.get("/api/v1/stats")).json()
            if stats["events"]["persisted"] >= REPLAY_EVENTS:
                return
            await asyncio.sleep(0.2)
    raise AssertionError("the replay log was not persisted in time")


def start_attacker(kind: str, web: Process, key: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--attacker",
            kind,
            "--url",
            web.url,
            "--key",
            key,
            "--seconds",
            str(seconds),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def loop_stalls(web: Process) -> dict[float, float]:
    """The server's `eventhub_loop_stall_seconds` histogram: cumulative count per bucket."""
    text = httpx.get(f"{web.url}/metrics", timeout=10).text
    buckets = {}
    for line in text.splitlines():
        if line.startswith("eventhub_loop_stall_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def stall_summary(before: dict[float, float], after: dict[float, float]) -> dict:
    """Stalls over 10 ms during the phase, and the bucket the longest one fell in."""
    delta = {le: after[le] - before.get(le, 0) for le in after}
    total = delta.get(float("inf"), 0)
    worst = min((le for le in sorted(delta) if delta[le] >= total), default=float("nan"))
    return {"stalls_over_10ms": total - delta.get(0.01, 0), "worst_stall_le_ms": worst * 1000}


def run_phase(kind: str | None, seconds: float, *, elsewhere: bool = False) -> dict:
    """One phase: the quiet tenant measured alone (`kind` None) or under an attack. With
    `elsewhere`, the attack is aimed at a decoy server of its own on the same machine: what the
    quiet tenant then feels is the machine's share (CPU, loopback, scheduler), not the hub's."""
    with contextlib.ExitStack() as stack:
        web, keys = stack.enter_context(server(SERVER_ENV.get(kind or "")))
        target, target_keys = (web, keys)
        if kind and elsewhere:
            target, target_keys = stack.enter_context(server(SERVER_ENV.get(kind)))
        return _measure(kind, seconds, web, keys, target, target_keys["noisy"]) | {
            "attack": f"{kind} (decoy)" if kind and elsewhere else kind or "alone"
        }


def _measure(
    kind: str | None, seconds: float, web: Process, keys: dict, target: Process, noisy_key: str
) -> dict:
    if kind == "replay":
        asyncio.run(fill_log(target, noisy_key))
    pid = web.proc.pid
    asyncio.run(quiet_phase(web, keys["quiet"], 1.0))  # warm up
    attacker = start_attacker(kind, target, noisy_key, seconds + 2) if kind else None
    try:
        if attacker is not None:
            if kind == "burst":
                _wait_under_way(attacker, within=120.0)
            time.sleep(1.0)  # the attack under way first
        stalls_before = loop_stalls(web)
        with RssSampler(pid) as rss:
            quiet = asyncio.run(quiet_phase(web, keys["quiet"], seconds))
            stalls = stall_summary(stalls_before, loop_stalls(web))
            noisy = {}
            if attacker is not None:
                out, _ = attacker.communicate(timeout=seconds + 120)
                noisy = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    finally:
        # A phase that failed must not leave its attacker running into the next one.
        if attacker is not None and attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    alive = web.proc.poll() is None
    return {
        **quiet,
        "rss_growth_mb": rss.growth,
        "noisy": noisy,
        "server_alive": alive,
        **stalls,
    }


UNDER_WAY = "attack under way"


def _wait_under_way(attacker: subprocess.Popen, within: float) -> None:
    """Returns once the attacker printed UNDER_WAY (its 2000 subscribers are connected)."""
    assert attacker.stdout is not None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ready, _, _ = select.select([attacker.stdout], [], [], deadline - time.monotonic())
        line = attacker.stdout.readline() if ready else ""
        if line.strip() == UNDER_WAY:
            return
        if not line and attacker.poll() is not None:
            raise RuntimeError("the attacker ended before its attack was under way")
    raise RuntimeError(f"the attack was not under way within {within:.0f} s")


def fivexx(result: dict) -> int:
    seen = [result["statuses"], result["noisy"].get("statuses", {})]
    return sum(n for counts in seen for code, n in counts.items() if str(code).startswith("5"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument(
        "--decoy",
        action="store_true",
        help="also run each attack against a decoy server of its own: the machine's floor",
    )
    parser.add_argument("--attacker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        # The attack's own clients run at a lower priority: on a 2-core machine they would
        # otherwise take the CPU from the server and the quiet tenant's client, and the numbers
        # would measure that, not what the server lets one tenant cost another.
        os.nice(10)
        ws_url = args.url.replace("http://", "ws://")
        attack = ATTACKERS[args.attacker](args.url, ws_url, args.key, args.seconds)
        print(json.dumps(asyncio.run(asyncio.wait_for(attack, args.seconds + 100))))
        return
    kinds = [k for k in args.attacks.split(",") if k]
    results = [run_phase(None, args.seconds)]
    for kind in kinds:
        results.append(run_phase(kind, args.seconds))
        if args.decoy:
            results.append(run_phase(kind, args.seconds, elsewhere=True))
    alone = results[0]["p99_ms"]
    print(
        f"\nquiet tenant: {QUIET_SUBSCRIBERS} subscribers, an event every "
        f"{QUIET_EVERY * 1000:.0f} ms, {args.seconds:.0f} s per phase ({os.cpu_count()} cores)"
    )
    print(
        "| phase | quiet p50 ms | quiet p99 ms | p99 / alone | lost | 5xx | RSS growth MB "
        "| loop stalls > 10 ms | longest stall ≤ ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    failed = False
    for r in results:
        errors = fivexx(r)
        failed |= bool(r["lost"] or errors or not r["server_alive"])
        print(
            f"| {r['attack']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['p99_ms'] / alone:.2f}x | {r['lost']} | {errors} | {r['rss_growth_mb']:.0f} "
            f"| {r['stalls_over_10ms']:.0f} | {r['worst_stall_le_ms']:.0f} |"
        )
    print()
    for r in results[1:]:
        print(f"{r['attack']}: {json.dumps(r['noisy'])}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
