"""Provides a hub of several real processes on the machine's Redis and PostgreSQL.

Under CI=true a missing Redis or PostgreSQL fails these tests; elsewhere it skips them.

A cluster costs Django start-ups: each is paid as few times as the tests allow. Migrations run
once per session into a template database that each test's database copies; a tenant and its
key are made in one `manage.py shell`; processes start side by side; tests that leave the
processes alone share one cluster per module (`make_module_cluster`), each with tenants of its
own.
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
import redis

from tests.processes import Process, base_env, free_port, manage, start_side_by_side

pytestmark = pytest.mark.e2e

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _require(name: str, ok: bool) -> None:
    if ok:
        return
    message = f"{name} is not reachable on 127.0.0.1"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: tests needing it must run)")
    pytest.skip(message)


def _reachable(port: int) -> bool:
    with closing(socket.socket()) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# The URLs of databases copied from the migrated template: a cluster on one needs no migrate.
_MIGRATED: set[str] = set()


@pytest.fixture(scope="session")
def pg_template():
    """A database migrated once per session; every test's database is a copy of it."""
    _require("PostgreSQL", _reachable(5432))
    name = f"eventhub_template_{secrets.token_hex(4)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        manage(base_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{name}"),
               "migrate", "--no-input")  # fmt: skip
        yield name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _copied_database(template: str):
    name = f"eventhub_e2e_{secrets.token_hex(4)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = f"postgres://postgres@127.0.0.1:5432/{name}"
    _MIGRATED.add(url)
    try:
        yield url
    finally:
        _MIGRATED.discard(url)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database(pg_template):
    """A fresh PostgreSQL database, migrated and holding no tenant; dropped afterwards."""
    with _copied_database(pg_template) as url:
        yield url


@pytest.fixture(scope="module")
def module_pg_database(pg_template):
    """As `pg_database`, for the tests of one module."""
    with _copied_database(pg_template) as url:
        yield url


@pytest.fixture
def redis_url(request, tmp_path):
    """A Redis no other test uses: a redis-server of the test's own when the machine has the
    binary, else database 11 of the machine's Redis, emptied before and after.

    The hub's keys are fixed (one deployment, one Redis), so two hubs on one Redis database
    share their log stream, consumer group and sequences: a test session running while another
    one (in a second checkout, say) used database 11 lost events to the other's worker, got
    the other's events in its log and saw its sequences reset by the other's flush.
    """
    if shutil.which("redis-server") is not None:
        server = OwnRedis(tmp_path, persistent=False)
        server.start()
        yield server.url
        # The test's processes first: stopping without Redis, they would retry and complain.
        for cluster in getattr(request.node, "clusters", ()):
            cluster.stop_all()
        server.stop()
        return
    _require("Redis", _reachable(REDIS_PORT))
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=11)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/11"
    client.flushdb()
    client.close()


@pytest.fixture
async def redis_engine(redis_url, settings):
    """The Redis engine itself, in the test's own process, on the test's Redis database."""
    from eventhub.redis_connection import redis_host
    from streams.backends.redis import RedisBackend

    settings.REDIS = redis_host(url=redis_url)
    made = RedisBackend()
    yield made
    await made.close()


class OwnRedis:
    """A redis-server of the test's own, on a free port; `persistent`: with an append-only
    file so that a restart keeps what it held (as a production Redis for the hub should)."""

    def __init__(self, workdir, *, persistent: bool = True) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.persistent = persistent
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--dir", str(self.workdir),
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else
                  ["--appendonly", "no"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"own redis-server exited with {self.proc.returncode}")
            if _reachable(self.port):
                return
            time.sleep(0.05)
        raise AssertionError("own redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path):
    _require("redis-server", shutil.which("redis-server") is not None)
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


# The real create_tenant and create_api_key commands for several tenants in one Django start-up
# (each start-up costs about a second); each key is the last line of its command's output, as
# a user would read it.
_TENANTS_SCRIPT = """
import io, json, os
from django.core.management import call_command
keys = []
for slug, *extra in json.loads(os.environ["SCALEOUT_TENANTS"]):
    call_command("create_tenant", slug, *extra, stdout=io.StringIO())
    out = io.StringIO()
    call_command("create_api_key", slug, stdout=out)
    keys.append(out.getvalue().strip().splitlines()[-1])
print(json.dumps(keys))
"""
POOL_SIZE = 10


class Cluster:
    """Processes of one hub sharing Redis and PostgreSQL; stops them all at the end."""

    def __init__(self, env: dict[str, str], log_dir) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[Process] = []
        self._pool: list[str] = []

    def start(self, kind: str) -> Process:
        process = Process(kind, self.env, self.log_dir)
        self.processes.append(process)
        return process.start()

    def start_side_by_side(self, *kinds: str, tenant: str | None = None) -> list[Process]:
        """Starts a process of each kind at once; returns them, in order, once all are ready.
        `tenant`: a tenant of that slug is made meanwhile (it needs only the database), and
        `key` is a key of it."""
        processes = [Process(kind, self.env, self.log_dir) for kind in kinds]
        self.processes.extend(processes)
        if tenant is None:
            return start_side_by_side(processes)
        with ThreadPoolExecutor(1) as pool:
            key = pool.submit(self.tenant_key, tenant)
            start_side_by_side(processes)
            self.key = key.result()
        return processes

    def tenant_key(self, slug: str, *extra: str) -> str:
        """Makes tenant `slug` (`extra`: create_tenant's options) and returns a key of it."""
        return self.tenant_keys((slug, *extra))[0]

    def tenant_keys(self, *specs: tuple[str, ...]) -> list[str]:
        """Makes a tenant for each (slug, *create_tenant options); returns a key of each."""
        env = dict(self.env, SCALEOUT_TENANTS=json.dumps(specs))
        out = manage(env, "shell", "-c", _TENANTS_SCRIPT)
        return json.loads(out.strip().splitlines()[-1])

    def fresh_key(self) -> str:
        """A key of a new tenant with no limits, for a test of its own on a shared cluster;
        tenants are made ahead, several at a time."""
        if not self._pool:
            specs = [(f"t-{secrets.token_hex(4)}",) for _ in range(POOL_SIZE)]
            self._pool = self.tenant_keys(*specs)
        return self._pool.pop(0)

    def stop_all(self) -> None:
        """SIGTERM to every process at once, then waits for each (bounded): they shut down
        side by side rather than one after another."""
        for process in self.processes:
            process.signal(signal.SIGTERM)
        for process in self.processes:
            process.stop()


def _cluster_env(**env: str) -> dict[str, str]:
    return base_env(EVENTHUB_HEARTBEAT_INTERVAL="1", EVENTHUB_STALE_TIMEOUT="10", **env)


def _migrate_unless_copied(env: dict[str, str]) -> None:
    if env.get("DATABASE_URL") not in _MIGRATED:
        manage(env, "migrate", "--no-input")


@pytest.fixture
def make_cluster(request, tmp_path):
    clusters: list[Cluster] = []
    request.node.clusters = clusters  # for redis_url, stopped after them

    def make(**env: str) -> Cluster:
        environment = _cluster_env(**env)
        _migrate_unless_copied(environment)
        cluster = Cluster(environment, tmp_path)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop_all()


@pytest.fixture
def two_webs(make_cluster, pg_database, redis_url):
    """Two web processes and a persistence worker on Redis and PostgreSQL, one tenant's key."""
    cluster = make_cluster(DATABASE_URL=pg_database, REDIS_URL=redis_url)
    _start_two_webs(cluster)
    return cluster


def _start_two_webs(cluster: Cluster) -> None:
    cluster.web_a, cluster.web_b, cluster.worker = cluster.start_side_by_side(
        "web", "web", "worker", tenant="acme"
    )


@pytest.fixture(scope="module")
def module_redis_url(tmp_path_factory):
    """A redis-server of the module's own (the machine's database 11 without the binary)."""
    if shutil.which("redis-server") is not None:
        server = OwnRedis(tmp_path_factory.mktemp("redis"), persistent=False)
        server.start()
        yield server.url
        server.stop()
        return
    _require("Redis", _reachable(REDIS_PORT))
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=11)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/11"
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def make_module_cluster(tmp_path_factory, module_pg_database, module_redis_url):
    """Makes clusters that the tests of a module share, on the module's database and Redis
    unless told otherwise; stops them (before that Redis) after the module's last test. The
    tests sharing one must not stop its processes, and each uses tenants of its own
    (`Cluster.fresh_key`, `Cluster.tenant_key` with a slug of its own)."""
    clusters: list[Cluster] = []

    def make(**env: str) -> Cluster:
        env.setdefault("DATABASE_URL", module_pg_database)
        env.setdefault("REDIS_URL", module_redis_url)
        environment = _cluster_env(**env)
        _migrate_unless_copied(environment)
        cluster = Cluster(environment, tmp_path_factory.mktemp("cluster"))
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop_all()


@pytest.fixture(scope="module")
def module_two_webs(make_module_cluster):
    """As `two_webs`, shared by the tests of a module; `key` is of tenant "acme", made once:
    a test wanting a tenant of its own takes `fresh_key()`."""
    cluster = make_module_cluster()
    _start_two_webs(cluster)
    return cluster


PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


class OwnPostgres:
    """A PostgreSQL cluster of the test's own (initdb on a free port, run as the `postgres`
    user when the tests run as root, as initdb requires), so that a test may stop it."""

    def __init__(self) -> None:
        self.port = free_port()
        # Under /tmp, not pytest's tmp_path: the postgres user must reach it.
        self.workdir = Path(tempfile.mkdtemp(prefix="eventhub-pg-", dir="/tmp"))
        self.data = self.workdir / "data"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        else:
            self._as = []
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        assert PG_BIN is not None, "PostgreSQL's binaries are not installed"
        done = subprocess.run(
            [*self._as, str(PG_BIN / tool), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{tool} failed:\n{done.stdout}\n{done.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.workdir / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "-t", "30",
                  "start")  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: every connection is dropped, as in an outage."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def remove(self) -> None:
        with contextlib.suppress(AssertionError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def own_postgres():
    _require("PostgreSQL's initdb", PG_BIN is not None and shutil.which("runuser") is not None)
    server = OwnPostgres()
    server.start()
    yield server
    server.remove()
