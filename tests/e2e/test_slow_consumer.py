"""A client that stops reading is closed as a slow consumer (4008) instead of growing the
server's memory without bound; the others keep receiving."""

import asyncio
import socket

import httpx
import pytest
import websockets

from streams.delivery.consumers.websocket import SLOW_CONSUMER_CLOSE_GRACE
from tests.processes import Process, base_env, manage

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path):
    env = base_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        EVENTHUB_MAX_BUFFER_BYTES=str(256 * 1024),
    )
    manage(env, "migrate", "--no-input")
    manage(env, "create_tenant", "acme")
    key = manage(env, "create_api_key", "acme").strip().splitlines()[-1]
    process = Process("web", env, tmp_path).start()
    yield process, key
    process.stop()


async def test_a_client_that_stops_reading_is_closed_with_4008(server):
    web, key = server
    headers = {"Authorization": f"Bearer {key}"}
    # max_queue=1: the client library stops reading the socket once one frame waits.
    stalled = await websockets.connect(
        f"{web.ws_url}/ws/v1/events", additional_headers=headers, ping_interval=None,
        max_queue=1, max_size=None,
    )  # fmt: skip
    healthy = await websockets.connect(
        f"{web.ws_url}/ws/v1/events", additional_headers=headers, ping_interval=None,
        max_size=None,
    )  # fmt: skip
    await stalled.recv()
    await healthy.recv()
    received = 0

    async def read_healthy():
        nonlocal received
        while True:
            await healthy.recv()
            received += 1

    reader = asyncio.create_task(read_healthy())
    payload = "x" * 60_000
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        for _ in range(200):  # up to ~120 MB: well past the socket buffers and the allowance
            batch = [{"topic": "big", "data": payload}] * 10
            response = await client.post(f"{web.url}/api/v1/events/batch", json={"events": batch})
            assert response.status_code == 202
            await asyncio.sleep(0.05)
            stats = (await client.get(f"{web.url}/api/v1/stats")).json()
            if stats["connections"]["websocket"] == 1:
                break
        else:
            raise AssertionError("the stalled client was never closed")
    assert not reader.done(), "the client that reads was kept"
    reader.cancel()
    assert received > 0
    # A client that reads on only after daphne's own close timeout (1 s) has passed still finds
    # what was queued, then the close code that tells it to reconnect with its last id.
    await asyncio.sleep(2)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await drain_until_closed(stalled)
    assert closed.value.rcvd.code == 4008
    await healthy.close()


async def drain_until_closed(websocket):
    """Read frames until the server closes the connection (raises ConnectionClosed)."""
    while True:
        await asyncio.wait_for(websocket.recv(), 10)


TCP_CLOSE = 7  # the first byte of TCP_INFO: the connection's state (linux/tcp_states.h)


async def test_an_sse_client_that_stops_reading_is_ended_and_then_dropped(server):
    web, key = server
    loop = asyncio.get_running_loop()
    stalled = socket.socket()
    stalled.setblocking(False)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a window it never opens
    try:
        await asyncio.wait_for(loop.sock_connect(stalled, ("127.0.0.1", web.port)), 5)
        request = (
            f"GET /sse/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
        )
        await loop.sock_sendall(stalled, request.encode())
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(headers=headers, timeout=10, trust_env=False) as client:
            for _ in range(200):
                batch = [{"topic": "big", "data": "x" * 60_000}] * 10
                response = await client.post(
                    f"{web.url}/api/v1/events/batch", json={"events": batch}
                )
                assert response.status_code == 202
                await asyncio.sleep(0.05)
                stats = (await client.get(f"{web.url}/api/v1/stats")).json()
                if stats["connections"]["sse"] == 0:
                    break
            else:
                raise AssertionError("the stalled SSE client was never ended")
        # Its stream has ended, but the end waits behind what it left unread: after a grace
        # like a WebSocket's close timeout, the server lets go of the connection (and of that).
        deadline = loop.time() + SLOW_CONSUMER_CLOSE_GRACE + 5
        while stalled.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_CLOSE:
            assert loop.time() < deadline, "the server kept the stalled client's connection"
            await asyncio.sleep(0.1)
    finally:
        stalled.close()
