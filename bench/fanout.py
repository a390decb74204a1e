"""Fan-out benchmark: publish→delivery latency and throughput of the real server (daphne).

Starts Eventhub with its embedded defaults (SQLite in a temporary directory, in-process channel
layer), opens N WebSocket subscribers spread over worker processes, publishes M events over HTTP
and measures, for every delivery, the time from just before the POST to the client's receipt.
Every subscriber must receive every event exactly once and in seq order; the script says so.

    .venv/bin/python bench/fanout.py                       # N=100,1000; 200 events; both modes
    .venv/bin/python bench/fanout.py --subscribers 1000 --client-procs 1 --modes burst
    .venv/bin/python bench/fanout.py --cross-process          # two daphnes + worker on Redis

With --cross-process the hub runs as in production on one machine: two daphne processes and the
persistence worker share Redis (--redis-url, a database the script empties first); events are
published to the first process and every subscriber is connected to the second, so each
latency includes the hop through Redis.

Modes:
  steady  single POSTs paced at --rate events/s (one keep-alive httpx client)
  burst   single POSTs back to back, as fast as the one keep-alive client gets its 202s

Loopback only; every phase has a deadline and the whole run is bounded by --timeout. The server
is always stopped (SIGTERM, bounded wait, SIGKILL). Exit code 0 when every run was complete and
exact, 1 otherwise.
"""

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embedded import proc_cpu  # noqa: E402

HOST = "127.0.0.1"
APP = "eventhub.asgi:application"


class Timeout(Exception):
    """The overall deadline (--timeout) passed."""


# Client worker (runs in its own process) -----------------------------------------------------


@dataclass(slots=True)
class _Sub:
    ws: object = None
    task: object = None
    count: int = 0  # frames of the current run
    unique: int = 0
    dups: int = 0
    disorder: int = 0  # an event whose index or seq is not the previous one plus one
    last_i: int = -1
    last_seq: int = -1
    bases: set = field(default_factory=set)  # seq - index: one value when seq order is exact
    seen: bytearray = field(default_factory=bytearray)
    closed: str | None = None


@dataclass(slots=True)
class _Run:
    run_id: str
    events: int
    latencies: list = field(default_factory=list)
    worst: list = field(default_factory=list)  # per event index: the slowest delivery
    first_receipt: float = float("inf")
    last_receipt: float = 0.0
    stray: int = 0  # event frames of another run
    done_subs: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


def worker_main(conn, uri: str, key: str, n: int, concurrency: int) -> None:
    """Entry point of a client process: `n` subscribers, driven by commands on `conn`; `uri`
    is a ws:// URL (WebSocket subscribers) or an http:// one (SSE)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops us
    asyncio.run(_worker(conn, uri, key, n, concurrency))


class _SseStream:
    """A bare SSE client over one HTTP/1.1 connection: what the bench needs of it (the frames'
    JSON, in order) at a cost per event close to the WebSocket library's, so that the client
    side is not what a comparison of the transports measures."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.chunked = False
        self.buffer = b""
        self.ready: collections.deque[bytes] = collections.deque()

    @classmethod
    async def open(cls, uri: str, key: str, wait: float) -> "_SseStream":
        from urllib.parse import urlsplit

        url = urlsplit(uri)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(url.hostname, url.port), wait
        )
        stream = cls(reader, writer)
        writer.write(
            (
                f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            writer.close()
            raise RuntimeError(f"SSE refused: {status.decode(errors='replace')}")
        stream.chunked = b"transfer-encoding: chunked" in head.lower()
        return stream

    async def _more(self) -> bytes:
        if not self.chunked:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError("stream ended")
            return data
        size = int((await self.reader.readline()).strip() or b"0", 16)
        if size == 0:
            raise EOFError("stream ended")
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def frames(self):
        """Each block's `data:` as JSON (comments, `retry:` and blocks without data skipped)."""
        while True:
            while not self.ready:
                while b"\n\n" not in self.buffer:
                    self.buffer += await self._more()
                *blocks, self.buffer = self.buffer.split(b"\n\n")
                self.ready.extend(blocks)
            # Kept on the stream, not in the generator: the welcome is read by one generator,
            # the events by the next.
            block = self.ready.popleft()
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    yield line[6:]

    def close(self) -> None:
        self.writer.close()


async def _worker(conn, uri: str, key: str, n: int, concurrency: int) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    sse = uri.startswith("http")
    subs = [_Sub() for _ in range(n)]
    state: dict[str, _Run | None] = {"run": None}
    other = {"welcome": 0, "ping": 0, "other": 0}

    def on_frame(sub: _Sub, raw, now: float) -> str | None:
        """Counts one frame; returns its type when it is not an event."""
        msg = json.loads(raw)
        kind = msg.get("type")
        if kind != "event":
            return kind
        run = state["run"]
        data = msg["data"]
        if run is None or not isinstance(data, dict) or data.get("run") != run.run_id:
            if run is not None:
                run.stray += 1
            return None
        i = data["i"]
        seq = msg["seq"]
        latency = now - data["sent"]
        run.latencies.append(latency)
        if 0 <= i < run.events and latency > run.worst[i]:
            run.worst[i] = latency
        run.first_receipt = min(run.first_receipt, now)
        run.last_receipt = max(run.last_receipt, now)
        sub.count += 1
        if i != sub.last_i + 1 or (sub.last_seq >= 0 and seq != sub.last_seq + 1):
            sub.disorder += 1
        sub.last_i, sub.last_seq = i, seq
        sub.bases.add(seq - i)
        if 0 <= i < run.events and not sub.seen[i]:
            sub.seen[i] = 1
            sub.unique += 1
            if sub.unique == run.events:
                run.done_subs += 1
                if run.done_subs == len(subs):
                    run.done.set()
        else:
            sub.dups += 1
        return None

    async def reader(sub: _Sub) -> None:
        ws = sub.ws
        try:
            if sse:
                async for raw in ws.frames():
                    if on_frame(sub, raw, time.time()) is not None:
                        other["other"] += 1
                return
            async for raw in ws:
                kind = on_frame(sub, raw, time.time())
                if kind == "ping":
                    other["ping"] += 1
                    await ws.send('{"type":"pong"}')
                elif kind is not None:
                    other["other"] += 1
        except ConnectionClosed as exc:
            sub.closed = f"{exc.rcvd.code if exc.rcvd else 'none'}"
        except Exception as exc:
            sub.closed = repr(exc)

    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def open_one(sub: _Sub) -> None:
        async with gate:
            for attempt in range(3):
                try:
                    if sse:
                        sub.ws = await _SseStream.open(uri, key, 20)
                        break
                    sub.ws = await connect(
                        uri,
                        additional_headers={"Authorization": f"Bearer {key}"},
                        ping_interval=None,
                        compression=None,
                        open_timeout=20,
                        close_timeout=5,
                        max_queue=None,
                    )
                    break
                except Exception as exc:
                    if attempt == 2:
                        errors.append(repr(exc))
                        return
                    await asyncio.sleep(0.2 * (attempt + 1))
            if sse:
                first = await asyncio.wait_for(anext(sub.ws.frames()), 20)
            else:
                first = await asyncio.wait_for(sub.ws.recv(), 20)
            welcome = json.loads(first)
            if welcome.get("type") != "welcome":
                errors.append(f"first frame is not a welcome: {welcome}")
                return
            other["welcome"] += 1
            sub.task = asyncio.create_task(reader(sub))

    started = time.perf_counter()
    await asyncio.gather(*(open_one(s) for s in subs), return_exceptions=True)
    # The client's own garbage collector must not add pauses to the measured latencies: the
    # connections are frozen out of it, and it is off while a run is measured.
    gc.collect()
    gc.freeze()
    conn.send(
        {"ready": other["welcome"], "errors": errors[:5], "seconds": time.perf_counter() - started}
    )

    while True:
        cmd = await asyncio.to_thread(conn.recv)
        if cmd["cmd"] == "arm":
            run = _Run(cmd["run"], cmd["events"])
            run.worst = [0.0] * cmd["events"]
            for sub in subs:
                sub.count = sub.unique = sub.dups = sub.disorder = 0
                sub.last_i = sub.last_seq = -1
                sub.bases = set()
                sub.seen = bytearray(cmd["events"])
            state["run"] = run
            gc.disable()
            cpu0 = _cpu_self()
            conn.send({"armed": True})
        elif cmd["cmd"] == "collect":
            run = state["run"]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.done.wait(), max(0.0, cmd["deadline"] - time.time()))
            state["run"] = None
            gc.enable()
            conn.send(
                {
                    "latencies": run.latencies,
                    "worst": run.worst,
                    "first_receipt": run.first_receipt,
                    "last_receipt": run.last_receipt,
                    "stray": run.stray,
                    "complete_subs": run.done_subs,
                    "subs": len(subs),
                    "deliveries": sum(s.count for s in subs),
                    "missing": sum(run.events - s.unique for s in subs),
                    "dups": sum(s.dups for s in subs),
                    "disorder": sum(s.disorder for s in subs),
                    "bases": sorted(set().union(*(s.bases for s in subs))),
                    "closed": [s.closed for s in subs if s.closed][:5],
                    "cpu": _cpu_self() - cpu0,
                }
            )
        elif cmd["cmd"] == "close":
            live = [s.ws for s in subs if s.ws is not None]
            if sse:
                for stream in live:
                    stream.close()
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        asyncio.gather(*(ws.close() for ws in live), return_exceptions=True), 20
                    )
            for sub in subs:
                if sub.task is not None:
                    sub.task.cancel()
            conn.send({"closed": True})
            return


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# Server ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _stop(proc: subprocess.Popen, wait: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# Measurements ------------------------------------------------------------------------------


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def _broadcast_metrics(client) -> tuple[float, float]:
    """(sum seconds, count) of the server's broadcast histogram."""
    total = count = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("eventhub_broadcast_duration_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("eventhub_broadcast_duration_seconds_count"):
            count = float(line.split()[-1])
    return total, count


def _publish(
    client, run_id: str, events: int, rate: float | None, deadline: float, batch: int = 1
) -> dict:
    """Publishes `events` events, `batch` at a time (single POSTs when 1, /events/batch
    otherwise); paced at `rate` requests per second, or back to back."""
    post_latencies, seqs, failures, offsets = [], [], [], []
    interval = 1.0 / rate if rate else 0.0
    first = time.time()
    next_at = time.perf_counter()
    for start in range(0, events, batch):
        if time.time() > deadline:
            failures.append("publish deadline passed")
            break
        if interval:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
        t0 = time.perf_counter()
        sent = time.time()
        bodies = [
            {"topic": "bench.fanout", "data": {"sent": sent, "run": run_id, "i": i}}
            for i in range(start, min(events, start + batch))
        ]
        offsets += [sent - first] * len(bodies)
        try:
            if batch == 1:
                response = client.post("/api/v1/events", json=bodies[0])
            else:
                response = client.post("/api/v1/events/batch", json={"events": bodies})
        except Exception as exc:
            failures.append(repr(exc))
            continue
        post_latencies.append(time.perf_counter() - t0)
        if response.status_code == 202:
            answer = response.json()
            seqs += [e["seq"] for e in answer["events"]] if batch > 1 else [answer["seq"]]
        else:
            failures.append(f"{response.status_code} {response.text[:200]}")
    last = time.time()
    return {
        "first": first,
        "last": last,
        "accepted": len(seqs),
        "seqs": seqs,
        "post_latencies": sorted(post_latencies),
        "failures": failures,
        "offsets": offsets,
    }


# Orchestration -----------------------------------------------------------------------------


def _spawn_clients(ctx, uri: str, key: str, n: int, procs: int, concurrency: int):
    shares = [n // procs + (1 if k < n % procs else 0) for k in range(procs)]
    workers = []
    for share in shares:
        if share == 0:
            continue
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker_main, args=(child, uri, key, share, concurrency), daemon=True)
        p.start()
        child.close()
        workers.append((p, parent))
    return workers


def _recv(conn, deadline: float, what: str) -> dict:
    if not conn.poll(max(0.0, deadline - time.time())):
        raise RuntimeError(f"client worker did not answer in time ({what})")
    return conn.recv()


def _stop_workers(workers) -> None:
    for _, conn in workers:
        with contextlib.suppress(Exception):
            conn.send({"cmd": "close"})
    end = time.time() + 25
    for _, conn in workers:
        with contextlib.suppress(Exception):
            _recv(conn, end, "close")
    for p, _ in workers:
        p.join(max(0.1, end - time.time()))
        if p.is_alive():
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)


def _run_mode(
    client, workers, server_pid: int, n: int, mode: str, args, run_no: int, observe=None
) -> dict:
    """One measured run; `client` publishes, `observe` (the subscribers' server, if another)
    answers for the broadcast metrics."""
    observe = observe or client
    run_id = f"r{run_no}-{os.getpid()}"
    rate = args.rate if mode == "steady" else None
    for _, conn in workers:
        conn.send({"cmd": "arm", "run": run_id, "events": args.events})
    arm_deadline = time.time() + 20
    for _, conn in workers:
        _recv(conn, arm_deadline, "arm")

    stats0 = client.get("/api/v1/stats").json()
    bsum0, bcount0 = _broadcast_metrics(observe)
    cpu0 = proc_cpu(server_pid)
    wall0 = time.time()

    publish_budget = args.events / rate * 2 + 30 if rate else 60
    pub = _publish(client, run_id, args.events, rate, time.time() + publish_budget, args.batch)
    drain_deadline = time.time() + args.drain
    for _, conn in workers:
        conn.send({"cmd": "collect", "deadline": drain_deadline})
    parts = [_recv(conn, drain_deadline + 30, "collect") for _, conn in workers]

    cpu1 = proc_cpu(server_pid)
    wall1 = time.time()
    bsum1, bcount1 = _broadcast_metrics(observe)
    stats1 = client.get("/api/v1/stats").json()

    latencies = sorted(x for part in parts for x in part["latencies"])
    last_receipt = max((p["last_receipt"] for p in parts), default=0.0)
    deliveries = sum(p["deliveries"] for p in parts)
    expected = n * pub["accepted"]
    seqs = pub["seqs"]
    bases = sorted(set().union(*(p["bases"] for p in parts)))
    seq_ok = seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else False
    base_ok = bases == [seqs[0]] if seqs else False
    span = last_receipt - pub["first"] if last_receipt else float("nan")
    pub_span = pub["last"] - pub["first"]
    posts = pub["post_latencies"]
    broadcasts = bcount1 - bcount0
    worst = [max(values) for values in zip(*(p["worst"] for p in parts), strict=True)]
    slowest = sorted(range(len(pub["offsets"])), key=lambda i: worst[i], reverse=True)[:3]
    return {
        "n": n,
        "mode": (mode if not rate else f"steady@{rate:g}/s")
        + (f" x{args.batch}" if args.batch > 1 else ""),
        "events": args.events,
        "accepted": pub["accepted"],
        "failures": pub["failures"][:5],
        "pub_rate": pub["accepted"] / pub_span if pub_span > 0 else float("nan"),
        "post_p50": _pct(posts, 50) * 1000,
        "post_p99": _pct(posts, 99) * 1000,
        "lat_p50": _pct(latencies, 50) * 1000,
        "lat_p95": _pct(latencies, 95) * 1000,
        "lat_p99": _pct(latencies, 99) * 1000,
        "lat_max": (latencies[-1] * 1000) if latencies else float("nan"),
        "deliveries": deliveries,
        "expected": expected,
        "deliv_rate": deliveries / span if span > 0 else float("nan"),
        "span": span,
        "missing": sum(p["missing"] for p in parts),
        "dups": sum(p["dups"] for p in parts),
        "disorder": sum(p["disorder"] for p in parts),
        "stray": sum(p["stray"] for p in parts),
        "seq_ok": seq_ok and base_ok,
        "closed": [c for p in parts for c in p["closed"]][:5],
        "server_cpu": (cpu1 - cpu0) / (wall1 - wall0),
        "cpu_per_event": (cpu1 - cpu0) * 1000 / max(1, pub["accepted"]),
        "client_cpu": [p["cpu"] / (wall1 - wall0) for p in parts],
        "server_delivered": stats1["events"]["delivered"] - stats0["events"]["delivered"],
        "broadcast_ms": (bsum1 - bsum0) / broadcasts * 1000 if broadcasts else float("nan"),
        "slowest": [(i, pub["offsets"][i], worst[i] * 1000) for i in slowest],
        "over_100ms": sum(1 for w in worst if w > 0.1),
    }


def _ok(r: dict) -> bool:
    return (
        r["accepted"] == r["events"]
        and not r["failures"]
        and r["deliveries"] == r["expected"]
        and r["missing"] == 0
        and r["dups"] == 0
        and r["disorder"] == 0
        and r["seq_ok"]
    )


def _print_table(results: list[dict], procs: int) -> None:
    head = (
        f"{'N':>5} {'via':<9} {'mode':<13} {'ev':>4} {'pub ev/s':>8} "
        f"{'POST p50':>8} {'POST p99':>8} "
        f"{'lat p50':>8} {'lat p95':>8} {'lat p99':>8} {'lat max':>8} {'deliv/s':>8} "
        f"{'bcast ms':>8} {'srv CPU':>7} {'CPU/ev':>6} {'cli CPU':>11} "
        f"{'loss':>5} {'dup':>4} {'order':>5}"
    )
    print()
    print(
        f"client processes: {procs}; latencies, POST times and broadcast in ms; srv CPU and "
        "cli CPU in cores busy; CPU/ev = server CPU ms per published event"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        cli = "+".join(f"{c:.2f}" for c in r["client_cpu"])
        print(
            f"{r['n']:>5} {r['transport']:<9} {r['mode']:<13} {r['accepted']:>4} "
            f"{r['pub_rate']:>8.1f} "
            f"{r['post_p50']:>8.2f} {r['post_p99']:>8.2f} {r['lat_p50']:>8.2f} "
            f"{r['lat_p95']:>8.2f} {r['lat_p99']:>8.2f} {r['lat_max']:>8.2f} "
            f"{r['deliv_rate']:>8.0f} {r['broadcast_ms']:>8.2f} {r['server_cpu']:>7.2f} "
            f"{r['cpu_per_event']:>6.2f} "
            f"{cli:>11} {r['missing']:>5} {r['dups']:>4} {r['disorder']:>5}"
        )
    print()
    for r in results:
        line = (
            f"N={r['n']} {r['transport']} {r['mode']}: "
            f"{r['deliveries']}/{r['expected']} deliveries "
            f"(server counted {r['server_delivered']}), seq order "
            f"{'exact' if r['seq_ok'] else 'WRONG'}, stray frames {r['stray']}"
        )
        line += ", slowest events " + ", ".join(
            f"#{i} (+{at:.1f} s) {ms:.0f} ms" for i, at, ms in r["slowest"]
        )
        line += f", events with a delivery over 100 ms: {r['over_100ms']}"
        if r["failures"]:
            line += f", publish failures: {r['failures']}"
        if r["closed"]:
            line += f", closed connections: {r['closed']}"
        print(line + (" — OK" if _ok(r) else " — FAILED"))


def _print_log_tail(directory: str, lines: int = 20) -> None:
    for log in sorted(Path(directory).glob("*.log")):
        with contextlib.suppress(OSError):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                print(f"{log.name} (last lines):\n  " + "\n  ".join(tail), file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="100,1000", help="comma-separated N values")
    parser.add_argument("--events", type=int, default=200, help="events per mode (M)")
    parser.add_argument("--modes", default="steady,burst", help="steady, burst or both")
    parser.add_argument("--rate", type=float, default=20.0, help="steady mode: requests/s")
    parser.add_argument(
        "--batch", type=int, default=1, help="events per request (over 1: /events/batch)"
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="client worker processes the subscribers are spread over",
    )
    parser.add_argument(
        "--transports",
        default="websocket",
        help="websocket, sse or both (each N runs on each, side by side in the table)",
    )
    parser.add_argument("--connect-concurrency", type=int, default=50, help="per client process")
    parser.add_argument("--drain", type=float, default=30.0, help="s to wait for deliveries")
    parser.add_argument("--timeout", type=float, default=240.0, help="overall limit in seconds")
    parser.add_argument(
        "--cross-process",
        action="store_true",
        help="publish to one daphne, subscribe on another, over Redis (with the worker)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/14",
        help="--cross-process: the Redis database to use (emptied first)",
    )
    parser.add_argument(
        "--database-url", default="", help="default: SQLite in a temporary directory"
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.subscribers.split(",") if x.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not sizes or any(n < 1 for n in sizes) or args.events < 1 or args.client_procs < 1:
        parser.error("N, --events and --client-procs must be positive")
    if any(m not in ("steady", "burst") for m in modes):
        parser.error("--modes takes steady and/or burst")
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not transports or any(t not in ("websocket", "sse") for t in transports):
        parser.error("--transports takes websocket and/or sse")

    import httpx

    def on_alarm(signum, frame):
        raise Timeout(f"overall timeout of {args.timeout:g} s passed")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)

    ctx = mp.get_context("spawn")
    results: list[dict] = []
    servers: list = []  # (name, process, port)
    worker_proc = None
    workers: list = []
    tmp = tempfile.TemporaryDirectory(prefix="eventhub-bench-")
    try:
        env = {
            **os.environ,
            "SECRET_KEY": "bench-secret-key-" + "0123456789abcdefghijklmnopqrstuvwxyz",
            "DEBUG": "0",
            "DATABASE_URL": args.database_url or f"sqlite:///{tmp.name}/db.sqlite3",
            "DJANGO_SETTINGS_MODULE": "eventhub.settings",
        }
        env.pop("REDIS_URL", None)
        if args.cross_process:
            import redis

            redis.Redis.from_url(args.redis_url).flushdb()
            env["REDIS_URL"] = args.redis_url
        _manage(env, "migrate", "--noinput")
        _manage(env, "create_tenant", f"bench-{os.getpid()}")
        key = _manage(env, "create_api_key", f"bench-{os.getpid()}").strip().splitlines()[-1]
        key = key.strip()

        names = ["publish", "subscribe"] if args.cross_process else ["server"]
        for name in names:
            port = _free_port()
            log = (Path(tmp.name) / f"{name}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(port), APP],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            servers.append((name, proc, port))
        if args.cross_process:
            log = (Path(tmp.name) / "worker.log").open("wb")
            worker_proc = subprocess.Popen(
                [sys.executable, "manage.py", "runworker", "eventhub.persist"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        clients = []
        for name, proc, port in servers:
            c = httpx.Client(
                base_url=f"http://{HOST}:{port}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=30.0,
            )
            clients.append(c)
            up_deadline = time.time() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} server exited early")
                with contextlib.suppress(httpx.HTTPError):
                    if c.get("/healthz").status_code == 200:
                        break
                if time.time() > up_deadline:
                    raise RuntimeError(f"{name} server did not become healthy in 30 s")
                time.sleep(0.2)
        client, observe = clients[0], clients[-1]
        server = servers[-1][1]  # the one the subscribers are on: its CPU is measured
        port = servers[-1][2]
        described = ", ".join(f"{n} daphne pid {p.pid} on :{pt}" for n, p, pt in servers)
        print(
            f"servers: {described}"
            f"{' + worker, over ' + args.redis_url if args.cross_process else ''}; "
            f"cpus: {os.cpu_count()}; "
            f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )

        uris = {
            "websocket": f"ws://{HOST}:{port}/ws/v1/events?topics=*",
            "sse": f"http://{HOST}:{port}/sse/v1/events?topics=*",
        }
        run_no = 0
        for n in sizes:
            for transport in transports:
                procs = min(args.client_procs, n)
                t0 = time.time()
                workers = _spawn_clients(
                    ctx, uris[transport], key, n, procs, args.connect_concurrency
                )
                connect_deadline = time.time() + 60 + n / 20
                ready = [_recv(conn, connect_deadline, "connect") for _, conn in workers]
                opened = sum(r["ready"] for r in ready)
                print(
                    f"N={n} {transport}: {opened} subscribers welcomed in "
                    f"{time.time() - t0:.1f} s over {len(workers)} client process(es)"
                )
                if opened != n:
                    raise RuntimeError(f"only {opened}/{n} subscribers connected: {ready}")
                connected = observe.get("/api/v1/stats").json()["connections"][transport]
                if connected != n:
                    raise RuntimeError(f"server reports {connected} {transport} connections")
                for mode in modes:
                    run_no += 1
                    result = _run_mode(
                        client, workers, server.pid, n, mode, args, run_no, observe=observe
                    )
                    result["transport"] = transport
                    results.append(result)
                    print(
                        f"  {result['mode']}: p50 {result['lat_p50']:.1f} ms, "
                        f"p99 {result['lat_p99']:.1f} ms, "
                        f"{result['deliv_rate']:.0f} deliveries/s, "
                        f"{'OK' if _ok(result) else 'FAILED'}"
                    )
                _stop_workers(workers)
                workers = []
        for c in clients:
            c.close()
    except Timeout as exc:
        print(f"aborted: {exc}", file=sys.stderr)
        _print_log_tail(tmp.name)
    except Exception as exc:
        print(f"aborted: {exc!r}", file=sys.stderr)
        _print_log_tail(tmp.name)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if workers:
            _stop_workers(workers)
        for name, proc, _ in servers:
            _stop(proc)
            print(f"{name} server stopped (exit code {proc.returncode})")
        if worker_proc is not None:
            _stop(worker_proc)
        tmp.cleanup()

    if results:
        _print_table(results, args.client_procs)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    expected_runs = len(sizes) * len(modes) * len(transports)
    return 0 if len(results) == expected_runs and all(_ok(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
