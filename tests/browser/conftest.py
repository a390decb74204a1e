"""Provides the browser tests' fixtures: Debian's Chromium driven by Playwright, the real hub (the
Procfile's web process over a SQLite database of its own), a staff user and one tenant per test,
and screenshots kept in test-artifacts/browser/. Fixtures own the processes they start and always
stop them."""

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.processes import ROOT, Process, base_env, manage

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts" / "browser"

HEARTBEAT = 1.0
STALE_TIMEOUT = 3.0
START_WITHIN = 30.0
STOP_WITHIN = 15.0
# How long a page may take to show what the hub sent it: the dashboards poll every two seconds.
SEEN_WITHIN_MS = 10_000

STAFF = ("staff", "staff-password-for-browser-tests")
# One tenant per test, so that each sees its own sequence numbers and connection counts.
TENANTS = (
    "viewer", "resume", "form", "admin", "client", "overview", "refresh", "webhooks", "presence",
)  # fmt: skip
# Short, so that a presence test sees a leave soon after a page goes.
PRESENCE_GRACE = 1.0

# Made in the test database in one Django start-up: the same management commands a user runs,
# each key read from the last line of its command's output.
_SETUP_SCRIPT = """
import io, json
from django.core.management import call_command
keys = {}
for slug in json.loads(SLUGS):
    call_command("create_tenant", slug, stdout=io.StringIO())
    out = io.StringIO()
    call_command("create_api_key", slug, stdout=out)
    keys[slug] = out.getvalue().strip().splitlines()[-1]
print(json.dumps(keys))
"""


@dataclass(frozen=True)
class Tenant:
    slug: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


class Hub:
    """The hub as an operator runs it: `start`, `stop` (SIGTERM) and `start_again` (a new
    process on the same port and database), so that open pages lose their connections but keep
    their URL."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return self.process.url

    def start(self) -> "Hub":
        # Kept before it is started, so that `stop` also ends a process that never got ready.
        self.process = Process("web", self.env, self.log_dir)
        self.process.start(ready_within=START_WITHIN)
        return self

    def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if the process is not gone in time."""
        if self.process is not None:
            self.process.stop(within=STOP_WITHIN)

    def start_again(self) -> "Hub":
        """After `stop`: a new process on the same port and database."""
        assert self.process.proc.poll() is not None, "the hub is still running"
        self.process = _on_same_port(self.process)
        self.process.start(ready_within=START_WITHIN)
        return self

    def publish(self, tenant: Tenant, topic: str, data=None) -> dict:
        """Publishes one event through the REST API; fails unless it is accepted (202)."""
        response = httpx.post(
            f"{self.url}/api/v1/events",
            json={"topic": topic, "data": data},
            headers=tenant.auth,
            timeout=10,
            trust_env=False,
        )
        assert response.status_code == 202, response.text
        return response.json()

    def subscriber_token(
        self, tenant: Tenant, topics: tuple[str, ...] = ("*",), **holder: object
    ) -> str:
        """A token for `topics`; `holder` adds its `user` and `info` claims (presence)."""
        response = httpx.post(
            f"{self.url}/api/v1/tokens",
            json={"topics": list(topics), "ttl": 600, **holder},
            headers=tenant.auth,
            timeout=10,
            trust_env=False,
        )
        assert response.status_code == 201, response.text
        return response.json()["token"]

    def connections(self, tenant: Tenant) -> dict[str, int]:
        response = httpx.get(
            f"{self.url}/api/v1/stats", headers=tenant.auth, timeout=10, trust_env=False
        )
        assert response.status_code == 200, response.text
        return response.json()["connections"]


def _on_same_port(old: Process) -> Process:
    """A new web process with the environment, port and command line of `old`, as
    Process.__init__ would have made them had it been given that port."""
    again = Process("web", old.env, old.log_path.parent)
    again.port = old.port
    again.env = dict(old.env, PORT=str(old.port))
    again.argv = list(old.argv)
    again.log_path = old.log_path.with_name(f"{old.log_path.stem}-restarted.log")
    return again


# Chromium -------------------------------------------------------------------------------


@pytest.fixture(scope="package", autouse=True)
def chromium_installed() -> None:
    """Checked before anything is started: without Chromium the browser tests fail in CI,
    where .ci/run installs it, and are skipped elsewhere."""
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="package")
def browser(chromium_installed) -> Iterator[Browser]:
    """Debian's Chromium (Playwright's own browser downloads are not used)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives Chromium against the real server")


@pytest.fixture(scope="package", autouse=True)
def _bounded_expectations() -> None:
    expect.set_options(timeout=SEEN_WITHIN_MS)


@pytest.fixture(scope="package")
def artifacts() -> Path:
    """test-artifacts/browser/, emptied at the start of the run so that it shows this run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


# Lines of the hub's log a failed test's report ends with: what the server saw, from CI too.
LOG_TAIL_LINES = 40


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.failed_call = report.failed
        if report.failed:
            for name in ("own_hub", "hub"):
                server = item.funcargs.get(name)
                if isinstance(server, Hub) and server.process is not None:
                    tail = server.process.log().splitlines()[-LOG_TAIL_LINES:]
                    report.sections.append((f"{name} log (last lines)", "\n".join(tail)))
    return report


class Screenshots:
    """Saves numbered screenshots of the test's pages under its own folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    def __call__(self, page: Page, step: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{len(self.taken) + 1:02d}-{re.sub(r'[^a-z0-9]+', '-', step)}.png"
        page.screenshot(path=path, full_page=True)
        self.taken.append(path)
        return path


@pytest.fixture
def screenshot(request, artifacts) -> Screenshots:
    return Screenshots(artifacts / re.sub(r"[^A-Za-z0-9_.]+", "-", request.node.name).strip("-"))


@pytest.fixture
def context(browser, request, screenshot):
    """A fresh browser profile (no cookies) per test; on failure each of its pages is
    photographed before it closes."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context
    finally:
        if getattr(request.node, "failed_call", False):
            for page in context.pages:
                if not page.is_closed():
                    screenshot(page, "at-failure")
        context.close()


@pytest.fixture
def page(context) -> Page:
    return context.new_page()


# The hub ----------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def prepared_database(tmp_path_factory) -> tuple[Path, dict[str, Tenant]]:
    """A migrated database with the staff user and every test's tenant, made once; each hub
    runs on a copy of it."""
    workdir = tmp_path_factory.mktemp("template")
    env = base_env(DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}")
    manage(env, "migrate", "--no-input")
    username, password = STAFF
    manage(
        dict(env, DJANGO_SUPERUSER_PASSWORD=password),
        "createsuperuser",
        "--no-input",
        "--username",
        username,
        "--email",
        f"{username}@example.com",
    )
    out = manage(env, "shell", "-c", f"SLUGS = {json.dumps(json.dumps(TENANTS))}\n{_SETUP_SCRIPT}")
    keys = json.loads(out.strip().splitlines()[-1])
    return workdir / "db.sqlite3", {slug: Tenant(slug, key) for slug, key in keys.items()}


@pytest.fixture(scope="package")
def tenants(prepared_database) -> dict[str, Tenant]:
    return prepared_database[1]


def _make_hub(tmp_path_factory, prepared_database, log_dir: Path) -> Hub:
    template, _ = prepared_database
    workdir = tmp_path_factory.mktemp("hub")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{template}{suffix}")
        if source.exists():
            shutil.copy(source, workdir / source.name)
    # DEBUG off, as in production: the cookies are Secure, which Chromium honours on
    # http://127.0.0.1 (a secure context), so no setting is relaxed for the tests. Pings come
    # often enough that every test would see a page that failed to answer them lose its
    # connection.
    env = base_env(
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        EVENTHUB_HEARTBEAT_INTERVAL=str(HEARTBEAT),
        EVENTHUB_STALE_TIMEOUT=str(STALE_TIMEOUT),
        # Webhook receivers of the tests listen on loopback, and a retry schedule of seconds
        # lets a delivery die within a test.
        EVENTHUB_WEBHOOK_ALLOW_PRIVATE="1",
        EVENTHUB_WEBHOOK_RETRY_SCHEDULE="0.2,0.2",
        EVENTHUB_PRESENCE_GRACE=str(PRESENCE_GRACE),
    )
    return Hub(env, log_dir)


@pytest.fixture(scope="package")
def hub(tmp_path_factory, prepared_database, artifacts) -> Iterator[Hub]:
    """The hub the tests that do not restart it share."""
    server = _make_hub(tmp_path_factory, prepared_database, artifacts)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def own_hub(tmp_path_factory, prepared_database, artifacts) -> Iterator[Hub]:
    """A hub of the test's own, for tests that restart it."""
    server = _make_hub(tmp_path_factory, prepared_database, artifacts)
    try:
        yield server.start()
    finally:
        server.stop()


# Waiting ----------------------------------------------------------------------------------


def eventually_equal(read: Callable[[], object], expected: object, *, within: float, what: str):
    """Polls `read` until it returns `expected`; fails with `what` and the last value read."""
    deadline = time.monotonic() + within
    while (value := read()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: expected {expected!r} within {within}s, got {value!r}")
        time.sleep(0.1)
    return value


# Pages --------------------------------------------------------------------------------------


def log_in(page: Page, base_url: str, next_path: str = "/dashboard/") -> None:
    """Logs the staff user in through the login page and lands on `next_path`."""
    username, password = STAFF
    page.goto(f"{base_url}/accounts/login/?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base_url}{next_path}")


def seqs_shown(page: Page) -> list[int]:
    """The viewer's event sequence numbers, in the order the page lists them (newest first)."""
    shown = page.locator("#events li").evaluate_all("items => items.map(i => i.dataset.seq)")
    return [int(seq) for seq in shown]
