"""Prints what an idle connection costs the server, in KB of resident memory, for Eventhub's
WebSocket and SSE against a bare `websockets` server and a bare ASGI app on the same daphne.

    .venv/bin/python bench/connections.py [--connections 1000] [--rounds 2]

Each server is started on its own (Eventhub on the embedded defaults, SQLite in a temporary
directory), warmed with a first crowd of connections that is opened and closed, then, for each
round, --connections more clients connect (100 at a time), each waiting for its first frame,
and all stay idle; the server's RSS growth divided by the count is the cost per connection.
Loopback only; every phase is bounded in time.
"""

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embedded import bare_daphne, embedded_hub, server, status_mb  # noqa: E402
from tests.processes import free_port  # noqa: E402

RAW_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve

async def handler(ws):
    await ws.send('{"type":"welcome"}')
    await ws.wait_closed()

async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), ping_interval=None,
                     compression=None):
        await asyncio.Future()

asyncio.run(main())
"""


async def _open_ws(url: str, headers: dict) -> object:
    ws = await websockets.connect(
        url, additional_headers=headers, ping_interval=None, compression=None, max_queue=4
    )
    await asyncio.wait_for(ws.recv(), 10)
    return ws


async def _open_sse(port: int, path: str, headers: dict) -> object:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    await asyncio.wait_for(reader.readuntil(b"welcome"), 10)
    return writer


async def _crowd(open_one, n: int, concurrency: int = 100) -> list:
    gate = asyncio.Semaphore(concurrency)

    async def one():
        async with gate:
            return await open_one()

    return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 120)


async def _close(conns: list) -> None:
    for conn in conns:
        if isinstance(conn, asyncio.StreamWriter):
            conn.close()
        else:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)


async def _measure(pid: int, open_one, n: int, rounds: int) -> float:
    """KB of the server's RSS per open connection, over `rounds` crowds of `n` held together
    (each crowd's memory is new: nothing is closed that the allocator could hand back)."""
    await _close(await _crowd(open_one, min(n, 200)))  # warm: imports, caches, first arenas
    await asyncio.sleep(1.0)
    before = status_mb(pid, "VmRSS")
    held: list = []
    try:
        for _ in range(rounds):
            held += await _crowd(open_one, n)
        await asyncio.sleep(1.0)  # what the server does after a welcome settles
        after = status_mb(pid, "VmRSS")
    finally:
        await _close(held)
    return (after - before) * 1024 / (n * rounds)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    n, rounds = args.connections, args.rounds
    rows: list[tuple[str, float]] = []

    port = free_port()
    with server([sys.executable, "-c", RAW_SERVER, str(port)], port) as pid:
        url = f"ws://127.0.0.1:{port}/"
        rows.append(("raw websockets", await _measure(pid, lambda: _open_ws(url, {}), n, rounds)))

    with bare_daphne() as (http_url, pid):
        url = http_url.replace("http", "ws", 1) + "/"
        port = int(http_url.rsplit(":", 1)[1])
        ws = await _measure(pid, lambda: _open_ws(url, {}), n, rounds)
        rows.append(("bare ASGI on daphne, WS", ws))
        sse = await _measure(pid, lambda: _open_sse(port, "/", {}), n, rounds)
        rows.append(("bare ASGI on daphne, SSE", sse))

    with embedded_hub() as (web, key):
        headers = {"Authorization": f"Bearer {key}"}
        url = f"ws://127.0.0.1:{web.port}/ws/v1/events?topics=*"
        pid = web.proc.pid
        rows.append(
            ("Eventhub WebSocket", await _measure(pid, lambda: _open_ws(url, headers), n, rounds))
        )
        path = "/sse/v1/events?topics=*"
        rows.append(
            (
                "Eventhub SSE",
                await _measure(pid, lambda: _open_sse(web.port, path, headers), n, rounds),
            )
        )

    raw = rows[0][1]
    print(f"\nKB of server RSS per idle connection, {rounds} x {n} held at once")
    print(f"{'server':<28} {'KB/conn':>8} {'x raw':>6}")
    for name, kb in rows:
        print(f"{name:<28} {kb:>8.1f} {kb / raw:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
