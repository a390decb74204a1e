"""A hub on Redis as hosted providers offer it: TLS only (`rediss://`, a certificate from a private
CA) and behind Redis Sentinel, each a redis-server of the test's own (issue 12, item 7)."""

import asyncio
import os
import shutil
import subprocess
import time

import httpx
import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from eventhub.redis_connection import redis_host
from streams.redis_keys import redis_client
from tests.clients import bearer, publish, ws_connect
from tests.processes import free_port
from tests.scaleout.conftest import _reachable

pytestmark = pytest.mark.e2e

SERVICE = "mymaster"
MASTER_PASSWORD = "master-secret-4f1c"
SENTINEL_PASSWORD = "sentinel-secret-9b2e"


def _missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: tests needing it must run)")
    pytest.skip(message)


def _require_tool(name: str) -> None:
    if shutil.which(name) is None:
        _missing(f"{name} is not installed")


class RedisProcess:
    """A redis-server (or Sentinel) of the test's own, listening on `port`, logging to a file."""

    def __init__(self, argv: list[str], port: int, log_path) -> None:
        self.argv = argv
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisProcess":
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.argv[:2]} exited:\n{self.log_path.read_text()}")
            if _reachable(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{self.argv[:2]} did not listen on {self.port} within 10s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certificates(directory) -> dict[str, str]:
    """A CA of the test's own and a server certificate it signed for 127.0.0.1, as a hosted
    Redis with a private CA has (the client is given the CA's certificate)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=Eventhub test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    openssl(
        "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=directory,
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    return {name: str(directory / name) for name in ("ca.crt", "server.crt", "server.key")}


def stop_clusters_first(request) -> None:
    # The test's processes before their Redis: stopping without it, they would retry and wait.
    for cluster in getattr(request.node, "clusters", ()):
        cluster.stop_all()


@pytest.fixture
def tls_redis(request, tmp_path):
    """A redis-server that speaks TLS only (`--port 0`); `.ca` is its CA's certificate."""
    _require_tool("openssl")
    _require_tool("redis-server")
    certs = make_certificates(tmp_path)
    port = free_port()
    server = RedisProcess(
        [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", certs["server.crt"], "--tls-key-file", certs["server.key"],
            "--tls-ca-cert-file", certs["ca.crt"], "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
        ],
        port,
        tmp_path / "redis-tls.log",
    )  # fmt: skip
    try:
        server.start()
    except AssertionError:
        # A redis-server built without TLS (BUILD_TLS=no) does not know --tls-port.
        if "Bad directive" not in server.log_path.read_text():
            raise
        _missing("this redis-server has no TLS support")
    server.ca = certs["ca.crt"]
    yield server
    stop_clusters_first(request)
    server.stop()


@pytest.fixture
def sentinel(request, tmp_path):
    """A password-protected master, its replica and one Sentinel (password-protected too) that
    monitors them as SERVICE; `.port` is the Sentinel's, `.replica_port` the replica's."""
    _require_tool("redis-server")
    binary = shutil.which("redis-server") or "redis-server"
    master_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
    started: list[RedisProcess] = []

    def data_server(name: str, port: int, *extra: str) -> None:
        (tmp_path / name).mkdir()
        started.append(
            RedisProcess(
                [
                    binary, "--bind", "127.0.0.1", "--port", str(port),
                    # Either may be the master after a failover: each needs the other's password.
                    "--requirepass", MASTER_PASSWORD, "--masterauth", MASTER_PASSWORD,
                    "--save", "", "--appendonly", "no", "--dir", str(tmp_path / name), *extra,
                ],
                port,
                tmp_path / f"{name}.log",
            ).start()
        )  # fmt: skip

    conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its file: it must be writable
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
        f"sentinel auth-pass {SERVICE} {MASTER_PASSWORD}\n"
        f"requirepass {SENTINEL_PASSWORD}\n"
    )
    try:
        data_server("master", master_port)
        data_server("replica", replica_port, "--replicaof", "127.0.0.1", str(master_port))
        server = RedisProcess(
            [binary, str(conf), "--sentinel"], sentinel_port, tmp_path / "sentinel.log"
        ).start()
        started.append(server)
        server.replica_port = replica_port
        yield server
        stop_clusters_first(request)
    finally:
        for process in reversed(started):
            process.stop()


async def wait_for(check, within: float, what: str):
    deadline = asyncio.get_running_loop().time() + within
    while not (result := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)
    return result


async def assert_delivered_and_persisted(cluster) -> None:
    """A web process and a worker: an event published is delivered over WebSocket and is in
    the history API shortly after; /readyz finds Redis."""
    web, _ = cluster.start_side_by_side("web", "worker", tenant="acme")
    key = cluster.key
    ws = await ws_connect(web.ws_url, key)
    await ws.welcome()
    async with httpx.AsyncClient(headers=bearer(key), trust_env=False, timeout=10) as client:
        accepted = await publish(client, web.url, key, "orders.created", {"n": 1})
        (delivered,) = await ws.events(1)
        assert delivered["id"] == accepted["id"]
        assert delivered["data"] == {"n": 1}

        async def persisted():
            page = (await client.get(f"{web.url}/api/v1/events?topic=orders.created")).json()
            return [e["id"] for e in page["results"]] == [accepted["id"]]

        await wait_for(persisted, 10, "the event in the history API")
        assert (await client.get(f"{web.url}/readyz")).status_code == 200
    await ws.close()


async def test_a_hub_on_a_tls_only_redis_with_a_private_ca_delivers_and_persists(
    tls_redis, make_cluster, pg_database
):
    cluster = make_cluster(
        DATABASE_URL=pg_database,
        REDIS_URL=f"rediss://127.0.0.1:{tls_redis.port}/0",
        REDIS_TLS_CA_FILE=tls_redis.ca,
    )

    await assert_delivered_and_persisted(cluster)


async def test_a_plain_url_to_the_tls_port_is_answered_503_at_once_and_logged(
    tls_redis, make_cluster, pg_database
):
    cluster = make_cluster(
        DATABASE_URL=pg_database, REDIS_URL=f"redis://127.0.0.1:{tls_redis.port}/0"
    )
    web, worker = cluster.start_side_by_side("web", "worker", tenant="acme")
    key = cluster.key

    async with httpx.AsyncClient(headers=bearer(key), trust_env=False, timeout=10) as client:
        started = time.monotonic()
        response = await client.post(f"{web.url}/api/v1/events", json={"topic": "t", "data": 1})
        assert response.status_code == 503
        assert "Redis" in response.json()["detail"]
        assert time.monotonic() - started < 5
        assert (await client.get(f"{web.url}/readyz")).status_code == 503

    # Both say which Redis they could not read from, and why.
    reason = f"(Error while reading from 127.0.0.1:{tls_redis.port}"
    assert f"could not join the channel layer {reason}" in web.log()

    async def logged():
        return f"redis unreachable {reason}" in worker.log()

    await wait_for(logged, 5, "the worker to log why it cannot reach Redis")


async def test_a_certificate_from_an_unknown_ca_is_refused_unless_verification_is_off(
    tls_redis, settings
):
    url = f"rediss://127.0.0.1:{tls_redis.port}/0"
    settings.REDIS = redis_host(url=url)
    client = redis_client()
    try:
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ping()
    finally:
        await client.aclose()

    settings.REDIS = redis_host(url=url, tls_verify="0")
    client = redis_client()
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_certificate_for_another_name_is_refused(tls_redis, settings):
    # The certificate is for 127.0.0.1 only: the CA is trusted, the name is not the server's.
    settings.REDIS = redis_host(
        url=f"rediss://localhost:{tls_redis.port}/0", tls_ca_file=tls_redis.ca
    )
    client = redis_client()
    try:
        with pytest.raises(RedisConnectionError, match=r"CERTIFICATE_VERIFY_FAILED.*localhost"):
            await client.ping()
    finally:
        await client.aclose()


async def test_a_hub_through_sentinel_delivers_and_persists(sentinel, make_cluster, pg_database):
    cluster = make_cluster(
        DATABASE_URL=pg_database,
        REDIS_SENTINELS=f"127.0.0.1:{sentinel.port}",
        REDIS_SENTINEL_SERVICE=SERVICE,
        REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD,
        REDIS_PASSWORD=MASTER_PASSWORD,
    )

    await assert_delivered_and_persisted(cluster)


def sentinel_client(sentinel) -> redis.Redis:
    return redis.Redis(port=sentinel.port, password=SENTINEL_PASSWORD, socket_timeout=2)


async def test_a_hub_through_sentinel_follows_a_failover_to_the_replica(
    sentinel, make_cluster, pg_database
):
    cluster = make_cluster(
        DATABASE_URL=pg_database,
        REDIS_SENTINELS=f"127.0.0.1:{sentinel.port}",
        REDIS_SENTINEL_SERVICE=SERVICE,
        REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD,
        REDIS_PASSWORD=MASTER_PASSWORD,
    )
    web, _ = cluster.start_side_by_side("web", "worker", tenant="acme")
    key = cluster.key
    ws = await ws_connect(web.ws_url, key)
    await ws.welcome()
    control = sentinel_client(sentinel)
    async with httpx.AsyncClient(headers=bearer(key), trust_env=False, timeout=10) as client:
        before = await publish(client, web.url, key, "t", "before")
        await ws.events(1)

        async def failed_over():
            try:
                control.sentinel_failover(SERVICE)
            except redis.ResponseError:  # NOGOODSLAVE until the Sentinel has seen the replica
                return False
            return True

        await wait_for(failed_over, 20, "the Sentinel to start a failover")

        async def promoted():
            _, port = control.sentinel_get_master_addr_by_name(SERVICE)
            return port == sentinel.replica_port

        await wait_for(promoted, 20, "the replica to be the master")

        async def accepted():
            response = await client.post(
                f"{web.url}/api/v1/events", json={"topic": "t", "data": "after"}
            )
            return response.json() if response.status_code == 202 else None

        after = await wait_for(accepted, 20, "a publish to be accepted by the new master")
        (delivered,) = await ws.events(1, within=15)
        assert delivered["id"] == after["id"]

        async def persisted():
            page = (await client.get(f"{web.url}/api/v1/events?topic=t")).json()
            return [e["id"] for e in page["results"]] == [before["id"], after["id"]]

        await wait_for(persisted, 20, "both events in the history API")
    control.close()
    await ws.close()
