"""Prints what a hub's upkeep costs with many quiet tenants: server CPU and Redis commands per
second while --tenants tenants hold --per-tenant idle WebSocket connections each.

    .venv/bin/python bench/many_tenants.py [--tenants 1000] [--per-tenant 5] [--seconds 20]

Runs the Procfile layout on one machine: one web process and the persistence worker, on a
redis-server of its own (a free port, no persistence) and SQLite in a temporary directory.
Creates the tenants and a key each in one Django start-up, opens the connections (100 at a
time, each waiting for its welcome), lets them settle, then measures over --seconds with nothing
published: the web process's CPU (cores busy) and the commands Redis ran per second (its INFO
counter). With nothing changing, the upkeep should cost next to nothing whatever the number of
tenants: pings, and the checks of what did change. Loopback only; every phase is bounded.
"""

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embedded import proc_cpu  # noqa: E402
from tests.processes import Process, base_env, free_port, manage  # noqa: E402

TENANTS_SCRIPT = """
import json
from tenants.actors import Actor
from tenants.services import api_key_issue, tenant_create
actor = Actor.command("bench/many_tenants.py")
keys = []
for n in range(int(sys.argv[1])):
    tenant = tenant_create(actor=actor, slug=f"quiet-{n}")
    keys.append(api_key_issue(actor=actor, tenant=tenant).secret)
print(json.dumps(keys))
"""


async def _connect_all(url: str, keys: list[str], per_tenant: int) -> list:
    gate = asyncio.Semaphore(100)

    async def one(key: str):
        async with gate:
            ws = await websockets.connect(
                url,
                additional_headers={"Authorization": f"Bearer {key}"},
                ping_interval=None,
                open_timeout=30,
            )
            await asyncio.wait_for(ws.recv(), 30)
            return ws

    return await asyncio.wait_for(
        asyncio.gather(*(one(key) for key in keys for _ in range(per_tenant))), 600
    )


async def _answer_pings(conns: list, seconds: float) -> None:
    """Reads every connection for `seconds`, answering pings, as live clients do."""

    async def read(ws) -> None:
        while True:
            frame = await ws.recv()
            if '"ping"' in frame:
                await ws.send('{"type":"pong"}')

    tasks = [asyncio.create_task(read(ws)) for ws in conns]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


async def _measure(url: str, keys: list[str], args, pid: int, client: redis.Redis) -> None:
    started = time.perf_counter()
    conns = await _connect_all(url, keys, args.per_tenant)
    print(f"{len(conns)} connections welcomed in {time.perf_counter() - started:.1f} s")
    await _answer_pings(conns, 5.0)  # settle: admission's aftermath, first pings
    cpu0, commands0, t0 = proc_cpu(pid), _commands(client), time.perf_counter()
    await _answer_pings(conns, args.seconds)
    wall = time.perf_counter() - t0
    cpu = (proc_cpu(pid) - cpu0) / wall
    commands = (_commands(client) - commands0) / wall
    print(
        f"\n{args.tenants} tenants x {args.per_tenant} idle connections, over {wall:.0f} s:"
        f"\n  web process CPU: {cpu:.3f} cores busy"
        f"\n  Redis commands/s (web and worker): {commands:.0f}"
    )
    for ws in conns:
        ws.transport.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--per-tenant", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        print("redis-server is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="eventhub-many-") as workdir:
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        redis_proc = subprocess.Popen(
            [*argv, "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL
        )
        processes: list[Process] = []
        try:
            client = redis.Redis(port=port)
            for _ in range(50):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            env = base_env(
                DATABASE_URL=f"sqlite:///{Path(workdir) / 'db.sqlite3'}",
                REDIS_URL=f"redis://127.0.0.1:{port}/0",
                EVENTHUB_KEY_CACHE_SECONDS="2",
            )
            manage(env, "migrate", "--no-input")
            started = time.perf_counter()
            script = TENANTS_SCRIPT.replace("sys.argv[1]", str(args.tenants))
            keys = json.loads(manage(env, "shell", "-c", script).strip().splitlines()[-1])
            print(f"{len(keys)} tenants with a key each in {time.perf_counter() - started:.1f} s")
            web = Process("web", env, Path(workdir)).start()
            processes.append(web)
            processes.append(Process("worker", env, Path(workdir)).start())
            url = f"ws://127.0.0.1:{web.port}/ws/v1/events?topics=*"
            assert web.proc is not None
            asyncio.run(_measure(url, keys, args, web.proc.pid, client))
        finally:
            for proc in processes:
                proc.stop()
            redis_proc.terminate()
            redis_proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
