"""Provides what the benchmarks share: a hub on the embedded defaults with a tenant and a key,
the floors it is held against (a bare ASGI app on the same daphne, any other server command),
and the CPU time and peak memory of a process."""

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.processes import ROOT, VENV_BIN, Process, base_env, free_port, manage


def proc_cpu(pid: int) -> float:
    """User+system CPU seconds of a process (Linux /proc); NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_mb(pid: int, field: str) -> float:
    """A memory field of a process's /proc status (VmRSS, VmHWM, …) in MB; NaN once gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    line = next(line for line in status.splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def peak_rss_mb(pid: int) -> float:
    """The most resident memory a process has had, in MB (Linux /proc VmHWM); NaN once gone."""
    return status_mb(pid, "VmHWM")


@contextlib.contextmanager
def embedded_hub(**settings: str) -> Iterator[tuple[Process, str]]:
    """One daphne on SQLite in a temporary directory, and a key of its tenant `bench`; stopped
    (SIGTERM) on exit. Keys are cached as in production (2 s); `settings` add to its
    environment (REDIS_URL, EVENTHUB_PRESENCE_GRACE, …)."""
    with tempfile.TemporaryDirectory() as workdir:
        env = base_env(
            DATABASE_URL=f"sqlite:///{Path(workdir) / 'bench.sqlite3'}",
            EVENTHUB_KEY_CACHE_SECONDS="2",
            **settings,
        )
        manage(env, "migrate", "--no-input")
        manage(env, "create_tenant", "bench")
        key = manage(env, "create_api_key", "bench").strip().splitlines()[-1]
        web = Process("web", env, Path(workdir)).start()
        try:
            yield web, key
        finally:
            web.stop()


@contextlib.contextmanager
def server(argv: list[str], port: int, within: float = 20.0) -> Iterator[int]:
    """Runs a server command until exit; yields its pid once something listens on `port`."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + within
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited early")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port} after {within} s")
            time.sleep(0.1)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def bare_daphne() -> Iterator[tuple[str, int]]:
    """daphne serving bench/bare_asgi.py: (its URL, its pid)."""
    port = free_port()
    argv = [str(VENV_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port)]
    with server([*argv, "bench.bare_asgi:application"], port) as pid:
        yield f"http://127.0.0.1:{port}", pid
