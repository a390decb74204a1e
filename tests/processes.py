"""Provides real server processes for the end-to-end, scale-out and browser tests: the
Procfile's commands, started on free ports with a given environment, and always stopped by the
fixture that started them. The one way the tests start a hub."""

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def base_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTHUB_", "REDIS_"))}
    env.pop("DATABASE_URL", None)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        SECRET_KEY="e2e-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        DEBUG="0",
        EVENTHUB_KEY_CACHE_SECONDS="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def python_run(env: dict[str, str], *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Runs the project's Python with these arguments, from the project's root, within 60 s."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def manage_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Runs a management command and returns how it ended, whatever that was."""
    return python_run(env, "manage.py", *args)


def manage(env: dict[str, str], *args: str) -> str:
    """Runs a management command and returns its stdout; fails the test on error."""
    done = manage_run(env, *args)
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


class Process:
    """One Procfile process (`web` or `worker`)."""

    def __init__(self, kind: str, env: dict[str, str], log_dir: Path) -> None:
        self.kind = kind
        self.port = free_port() if kind == "web" else None
        # A worker serves /metrics and /healthz on a port of its own.
        self.metrics_port = free_port() if kind == "worker" else None
        self.env = dict(env, PORT=str(self.port or 0))
        if self.metrics_port is not None:
            self.env["EVENTHUB_WORKER_METRICS_PORT"] = str(self.metrics_port)
        command = procfile()[kind].replace("$PORT", str(self.port or 0))
        self.argv = shlex.split(command.replace("0.0.0.0", "127.0.0.1"))
        self.log_path = log_dir / f"{kind}-{self.port or 'worker'}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, ready_within: float = 30.0) -> "Process":
        """Starts the process; returns once it is ready (a web process answers /healthz, a
        worker logs that it reads the stream). One that is not ready in time is killed."""
        self.launch()
        return self.wait_ready(ready_within)

    def launch(self) -> "Process":
        """Starts the process and returns at once; `wait_ready` waits for it."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def wait_ready(self, ready_within: float = 30.0) -> "Process":
        """Returns once the launched process is ready; kills it if it is not in time."""
        try:
            if self.kind == "web":
                self._wait_healthy(ready_within)
            else:
                self._wait_for_log("persistence worker", ready_within)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_healthy(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.kind} exited early:\n{self.log()}"
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=1, trust_env=False)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.kind} not healthy within {within}s:\n{self.log()}")

    def _wait_for_log(self, text: str, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.kind} exited early:\n{self.log()}"
            if text in self.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.kind} did not log {text!r} within {within}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, within: float = 30.0) -> int:
        return self.proc.wait(timeout=within)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, and waits (bounded) for the process to be gone."""
        if self.running:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def stop(self, within: float = 30.0) -> None:
        """SIGTERM (graceful), then SIGKILL if it is not gone in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_side_by_side(processes: list[Process], ready_within: float = 30.0) -> list[Process]:
    """Starts every process at once and returns once all are ready: their start-ups (mostly
    Django's imports) overlap instead of adding up. If one is not ready, all are killed."""
    try:
        for process in processes:
            process.launch()
        for process in processes:
            process.wait_ready(ready_within)
    except BaseException:
        for process in processes:
            process.kill()
        raise
    return processes
