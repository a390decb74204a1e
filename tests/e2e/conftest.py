"""Provides the real hub for end-to-end tests: daphne on a free port over its own SQLite
database, the management commands a user runs, and WebSocket and SSE clients that collect what
they receive behind bounded waits. Fixtures own the processes and connections they start and
always stop them."""

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue

import httpx
import pytest

from tests.clients import (
    Refused,
    SseClient,
    WsClient,
    bearer,
    query,
    sse_open,
    ws_connect,
)
from tests.processes import VENV_BIN, Process, manage

ROOT = Path(__file__).resolve().parents[2]

HEARTBEAT = 0.3
STALE_TIMEOUT = 1.5
MAX_EVENT_BYTES = 1024
MAX_BODY_BYTES = 64 * 1024
MAX_BATCH = 100

# Short enough for tests to see heartbeats and reaping within a second or two; limits small
# enough that a test can exceed each of them cheaply; no key cache, so that a revoked key or a
# suspended tenant is refused at once.
HUB_ENV = {
    "SECRET_KEY": "e2e-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
    "DEBUG": "0",
    "PYTHONUNBUFFERED": "1",
    "EVENTHUB_HEARTBEAT_INTERVAL": str(HEARTBEAT),
    "EVENTHUB_STALE_TIMEOUT": str(STALE_TIMEOUT),
    "EVENTHUB_KEY_CACHE_SECONDS": "0",
    "EVENTHUB_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
    "EVENTHUB_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "EVENTHUB_MAX_BATCH": str(MAX_BATCH),
}

_ACCESS_LINE = re.compile(r"^127\.0\.0\.1:\d+ - - \[")

START_WITHIN = 20.0
STOP_WITHIN = 15.0


def hub_env(database: Path, **overrides: str) -> dict[str, str]:
    """The environment of every hub process: the caller's, minus anything that would point
    the hub at another engine or change its limits, plus the e2e settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EVENTHUB_", "REDIS_")) and k != "DATABASE_URL"
    }
    env.update(HUB_ENV, DATABASE_URL=f"sqlite:///{database}")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # the Procfile's daphne
    env.update(overrides)
    return env


# Runs the real create_tenant and create_api_key commands for several tenants in one Django
# start-up (each start-up costs most of a second); each key is the last line of its command's
# output, as a user would read it.
_TENANTS_SCRIPT = """
import io, json, os
from django.core.management import call_command
made = []
for spec in json.loads(os.environ["E2E_TENANT_SPECS"]):
    call_command("create_tenant", spec["slug"], stdout=io.StringIO(), **spec["options"])
    keys = []
    for scopes in spec["keys"]:
        out = io.StringIO()
        call_command("create_api_key", spec["slug"], scopes=scopes, stdout=out)
        keys.append(out.getvalue().strip().splitlines()[-1])
    made.append(keys)
print(json.dumps(made))
"""
# Runs management commands sent on stdin, one JSON list of arguments a line, in one Django
# start-up for a hub's whole life: `manage.py shell -c` or a command costs most of a second as a
# process of its own, and tests run hundreds. `shell -c CODE` is run as the shell runs it
# (exec), anything else through call_command; each answer is one line after _ANSWER.
_ANSWER = "@@manage-answer@@ "
_COMMANDS_SCRIPT = """
import contextlib, io, json, os, sys, traceback
from django.core.management import call_command
from django.db import close_old_connections
answer, real_stdout = "@@manage-answer@@ ", sys.stdout
for line in sys.stdin:
    request = json.loads(line)
    os.environ.update(request["env"])
    out, err, ok = io.StringIO(), io.StringIO(), True
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = request["args"]
            if args[:2] == ["shell", "-c"]:
                exec(args[2], {"__name__": "__main__"})
            else:
                call_command(*args, stdout=out, stderr=err)
    except BaseException:
        ok = False
        err.write(traceback.format_exc())
    close_old_connections()
    reply = {"ok": ok, "stdout": out.getvalue(), "stderr": err.getvalue()}
    real_stdout.write(answer + json.dumps(reply) + "\\n")
    real_stdout.flush()
"""
COMMAND_WITHIN = 60.0


class Commands:
    """One long-lived `manage.py shell` that runs a hub's management commands, one at a time
    (tests call it from threads too)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._lock = threading.Lock()
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "manage.py", "shell", "-c", _COMMANDS_SCRIPT],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True,
            )  # fmt: skip
        self._lines: Queue[str | None] = Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            if line.startswith(_ANSWER):
                self._lines.put(line[len(_ANSWER) :])
        self._lines.put(None)  # it exited

    def run(self, args: tuple[str, ...], env: dict[str, str]) -> str:
        """Runs `manage.py ARGS` with `env` added; returns stdout, fails the test on error."""
        with self._lock:
            assert self._proc.poll() is None, "the hub's command runner exited"
            self._proc.stdin.write(json.dumps({"args": list(args), "env": env}) + "\n")
            self._proc.stdin.flush()
            try:
                line = self._lines.get(timeout=COMMAND_WITHIN)
            except Empty:
                raise AssertionError(f"manage.py {args[0]} took over {COMMAND_WITHIN}s") from None
        assert line is not None, "the hub's command runner exited"
        reply = json.loads(line)
        assert reply["ok"], f"manage.py {' '.join(args)} failed:\n{reply['stderr']}"
        return reply["stdout"]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)


ALL_SCOPES = "publish,subscribe,history,webhooks"
POOL_SIZE = 25


@dataclass
class Tenant:
    slug: str
    key: str  # every scope
    keys: dict[str, str] = field(default_factory=dict)  # by comma-separated scopes

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.key)


class HubServer:
    """One daphne process serving the hub over a database of its own.

    `restart` keeps the database, as an operator restarting the service would.
    """

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.database = workdir / "db.sqlite3"
        self.env = hub_env(self.database, **env)
        self.process: Process | None = None
        self._logs: list[Path] = []  # of every start, in order
        self._pool: list[Tenant] = []
        self._commands: Commands | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # Management commands ---------------------------------------------------------------

    def manage(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Runs `manage.py ARGS` against this hub's database; returns stdout, fails on error.
        `env` may add only E2E_ variables (the runner's settings are read once)."""
        env = env or {}
        assert all(name.startswith("E2E_") for name in env), env
        if self._commands is None:
            self._commands = Commands(self.env, self.workdir / "commands.log")
        return self._commands.run(args, env)

    def tenant(
        self,
        name: str = "t",
        *,
        max_connections: int | None = None,
        publish_rate: int | None = None,
        extra_keys: tuple[str, ...] = (),
    ) -> Tenant:
        """A new tenant with a unique slug and a key with every scope, plus one key per entry
        of `extra_keys` (comma-separated scopes, e.g. "publish"). Plain tenants come from a
        pool made in advance."""
        options = {}
        if max_connections is not None:
            options["max_connections"] = max_connections
        if publish_rate is not None:
            options["publish_rate"] = publish_rate
        if options or extra_keys:
            return self._make_tenants([(name, options, [ALL_SCOPES, *extra_keys])])[0]
        if not self._pool:
            self._pool = self._make_tenants([("t", {}, [ALL_SCOPES])] * POOL_SIZE)
        return self._pool.pop(0)

    def _make_tenants(self, specs: list[tuple[str, dict, list[str]]]) -> list[Tenant]:
        wanted = [
            {"slug": f"{name}-{secrets.token_hex(4)}", "options": options, "keys": keys}
            for name, options, keys in specs
        ]
        out = self.manage(
            "shell", "-c", _TENANTS_SCRIPT, env={"E2E_TENANT_SPECS": json.dumps(wanted)}
        )
        made = json.loads(out.strip().splitlines()[-1])
        return [
            Tenant(slug=spec["slug"], key=keys[0], keys=dict(zip(spec["keys"], keys, strict=True)))
            for spec, keys in zip(wanted, made, strict=True)
        ]

    # Run in a thread: a test's event loop must go on answering pings meanwhile.

    async def suspend(self, tenant: Tenant) -> None:
        """Suspends the tenant, as an operator would from a shell."""
        script = (
            "from tenants.actors import Actor; from tenants.models import Tenant; "
            "from tenants.services import tenant_set_active; "
            "tenant_set_active(actor=Actor.command('manage.py shell'), "
            f"tenant=Tenant.objects.get(slug={tenant.slug!r}), active=False)"
        )
        await asyncio.to_thread(self.manage, "shell", "-c", script)

    async def revoke(self, key_or_prefix: str) -> None:
        await asyncio.to_thread(self.manage, "revoke_api_key", key_or_prefix)

    async def login(self, *, staff: bool) -> str:
        """A new dashboard user, logged in; returns its session cookie value. (Logging in
        through the admin form needs HTTPS here: DEBUG off makes the CSRF cookie Secure.)"""
        script = (
            "import secrets; from django.contrib import auth; "
            "from django.contrib.sessions.backends.db import SessionStore; "
            "user = auth.get_user_model().objects.create_user("
            f"'user-' + secrets.token_hex(4), password=secrets.token_hex(8), is_staff={staff}); "
            "session = SessionStore(); session[auth.SESSION_KEY] = str(user.pk); "
            "session[auth.BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'; "
            "session[auth.HASH_SESSION_KEY] = user.get_session_auth_hash(); "
            "session.create(); print(session.session_key)"
        )
        out = await asyncio.to_thread(self.manage, "shell", "-c", script)
        return out.strip().splitlines()[-1]

    async def logout(self, session: str) -> None:
        """Ends a dashboard session as a logout does: its row is deleted."""
        script = (
            "from django.contrib.sessions.models import Session; "
            f"Session.objects.filter(session_key={session!r}).delete()"
        )
        await asyncio.to_thread(self.manage, "shell", "-c", script)

    # Process ---------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return self.process.port if self.process is not None else None

    @property
    def proc(self):
        return self.process.proc if self.process is not None else None

    def start(self, within: float = START_WITHIN) -> "HubServer":
        """Starts the Procfile's web process on a free port (a new one each start) over this
        hub's database; returns once /healthz answers 200."""
        assert self.process is None or not self.process.running, "already running"
        if self._commands is None:  # its start-up overlaps the server's
            self._commands = Commands(self.env, self.workdir / "commands.log")
        self.process = Process("web", self.env, self.workdir)
        self._logs.append(self.process.log_path)
        self.process.start(ready_within=within)
        return self

    def terminate(self) -> None:
        """Sends SIGTERM (a graceful stop) and returns at once."""
        if self.process is not None:
            self.process.signal(signal.SIGTERM)

    def wait_exit(self, within: float = STOP_WITHIN) -> int:
        """Waits for the process to end; fails the test if it does not in time."""
        try:
            return self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"daphne did not exit within {within}s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def stop(self, within: float = STOP_WITHIN) -> None:
        """SIGTERM, a bounded wait, then SIGKILL if it is still there; the command runner
        goes too (the next command starts another)."""
        if self.process is not None:
            self.process.stop(within)
        if self._commands is not None:
            self._commands.close()
            self._commands = None

    def restart(self) -> "HubServer":
        """A graceful stop and a start on the same database (on a new port)."""
        self.stop()
        return self.start()

    def log(self) -> str:
        """The server's output, without the access log (one line per request), which would
        bury what matters when a test fails."""
        lines = [
            line
            for path in self._logs
            if path.exists()
            for line in path.read_text(errors="replace").splitlines()
        ]
        kept = [line for line in lines if not _ACCESS_LINE.match(line)]
        return "\n".join(kept[-200:])


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory) -> Path:
    """A migrated, empty database, made once; each hub starts from a copy of it."""
    workdir = tmp_path_factory.mktemp("template")
    manage(HubServer(workdir).env, "migrate", "--no-input")
    return workdir / "db.sqlite3"


@pytest.fixture(scope="session")
def make_hub(tmp_path_factory, migrated_database):
    """Makes hubs (started) on fresh databases; stops every one of them at the end."""
    started: list[HubServer] = []

    def make(**env: str) -> HubServer:
        workdir = tmp_path_factory.mktemp("hub")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{migrated_database}{suffix}")
            if source.exists():
                shutil.copy(source, workdir / source.name)
        server = HubServer(workdir, **env)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def hub(make_hub) -> HubServer:
    """The hub most tests share; each test makes tenants of its own on it."""
    return make_hub()


@pytest.fixture
def own_hub(make_hub):
    """A hub of the test's own, for tests that stop or restart it."""
    server = make_hub()
    yield server
    server.stop()


@pytest.fixture
def tenant(hub) -> Tenant:
    return hub.tenant()


# Waiting ---------------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[object]], within: float, what: str):
    """Polls `check` until it returns something truthy; fails with `what` after `within`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


# Clients ---------------------------------------------------------------------------------


class Subscribers:
    """Opens WebSocket and SSE subscribers on a hub; closes whatever is left at the end."""

    def __init__(self) -> None:
        self._open: list[WsClient | SseClient] = []

    async def ws(
        self,
        server: HubServer,
        key: str | None = None,
        *,
        answer_pings: bool | str = True,
        headers: dict[str, str] | None = None,
        origin: str | None = None,
        **params: str | None,
    ) -> WsClient:
        client = await ws_connect(
            server.ws_url, key, answer_pings=answer_pings, headers=headers, origin=origin, **params
        )
        self._open.append(client)
        return client

    async def sse(
        self,
        server: HubServer,
        key: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **params: str | None,
    ) -> SseClient:
        """Opens a stream that must be accepted (200, text/event-stream)."""
        sse = await sse_open(server.url, key, headers=headers, **params)
        if sse.response.status_code != 200:
            body = await sse.response.aread()
            await sse.close()
            raise AssertionError(f"SSE refused with {sse.response.status_code}: {body!r}")
        self._open.append(sse)
        return sse

    async def ws_refused(self, server: HubServer, key: str | None = None, **kw) -> Refused:
        """Connects and collects frames until the server closes; fails if it welcomes."""
        ws = await self.ws(server, key, **kw)
        code = await ws.closed(within=5)
        assert not any(f["type"] == "welcome" for f in ws.received), ws.received
        return Refused(code=code, frames=ws.received)

    async def sse_refused(
        self, server: HubServer, key: str | None = None, *, headers=None, **params
    ) -> Refused:
        """Makes the subscribe request and returns the refusal; fails if a stream starts."""
        all_headers = dict(headers or {})
        if key:
            all_headers.update(bearer(key))
        async with (
            httpx.AsyncClient(timeout=5, trust_env=False) as client,
            client.stream(
                "GET", f"{server.url}/sse/v1/events{query(**params)}", headers=all_headers
            ) as response,
        ):
            assert response.status_code != 200, "the stream was accepted"
            raw = await response.aread()
        return Refused(status=response.status_code, headers=response.headers, body=json.loads(raw))

    async def close_all(self) -> None:
        for client in self._open:
            # Teardown goes on with the others whatever one of them does.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)


@pytest.fixture
async def subscribers():
    opened = Subscribers()
    yield opened
    await opened.close_all()


@pytest.fixture
async def api():
    """An HTTP client; each call names its server's URL and its key."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client


async def publish(
    api: httpx.AsyncClient,
    server: HubServer,
    key: str,
    topic: str,
    data,
    *,
    event_type: str | None = None,
) -> dict:
    """Publishes one event; fails unless it is accepted (202)."""
    body = {"topic": topic, "data": data}
    if event_type is not None:
        body["type"] = event_type
    response = await api.post(f"{server.url}/api/v1/events", json=body, headers=bearer(key))
    assert response.status_code == 202, response.text
    return response.json()


async def publish_batch(
    api: httpx.AsyncClient, server: HubServer, key: str, events: list[dict]
) -> list[dict]:
    response = await api.post(
        f"{server.url}/api/v1/events/batch", json={"events": events}, headers=bearer(key)
    )
    assert response.status_code == 202, response.text
    return response.json()["events"]


async def history(api: httpx.AsyncClient, server: HubServer, key: str, **params) -> list[dict]:
    """Every event of the persisted log (following `next`), oldest first."""
    url = f"{server.url}/api/v1/events{query(limit='1000', **params)}"
    events = []
    while url:
        response = await api.get(url, headers=bearer(key))
        assert response.status_code == 200, response.text
        page = response.json()
        events += page["results"]
        url = page["next"]
    return events


async def stats(api: httpx.AsyncClient, server: HubServer, key: str) -> dict:
    response = await api.get(f"{server.url}/api/v1/stats", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()
