"""Provides the real network clients of the end-to-end and scale-out tests: WebSocket and SSE
subscribers whose background readers collect what the server sends (answering pings as a
client should), and the bounded waits they use."""

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed


async def bounded(awaitable, within: float, what: str):
    try:
        return await asyncio.wait_for(awaitable, within)
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what}") from None


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def query(**params: str | None) -> str:
    given = {k: v for k, v in params.items() if v is not None}
    return f"?{urlencode(given)}" if given else ""


class WsClient:
    """A WebSocket subscriber. A background reader collects frames; like a well-behaved
    client it answers the server's `{"type": "ping"}` with a pong, unless told not to."""

    def __init__(self, connection, *, answer_pings: bool | str) -> None:
        self.connection = connection
        self.answer_pings = answer_pings
        # What the JavaScript client sends, unless the test names another spelling.
        self.pong = answer_pings if isinstance(answer_pings, str) else '{"type":"pong"}'
        self.pings = 0
        self.frames: asyncio.Queue[dict] = asyncio.Queue()
        self.received: list[dict] = []  # every frame but pings, in order
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.connection:
                frame = json.loads(raw)
                if frame.get("type") == "ping":
                    self.pings += 1
                    if self.answer_pings:
                        # The server may have closed meanwhile; what it sent before the
                        # close is still to be read.
                        with contextlib.suppress(ConnectionClosed):
                            await self.connection.send(self.pong)
                    continue
                self.received.append(frame)
                self.frames.put_nowait(frame)
        except ConnectionClosed:
            pass

    @property
    def open(self) -> bool:
        return not self._reader.done()

    async def next_frame(self, within: float = 5.0) -> dict:
        return await bounded(self.frames.get(), within, "the next WebSocket frame")

    async def welcome(self, within: float = 5.0) -> dict:
        frame = await self.next_frame(within)
        assert frame["type"] == "welcome", frame
        return frame

    async def events(self, count: int, within: float = 10.0) -> list[dict]:
        """The next `count` frames, each of which must be an event."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        got = []
        while len(got) < count:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"got {len(got)} of {count} events within {within}s: {got}")
            frame = await self.next_frame(left)
            assert frame["type"] == "event", f"expected an event, got {frame}"
            got.append(frame)
        return got

    async def until(self, data, within: float = 5.0) -> list[dict]:
        """The events up to and including the first whose data is `data` (a fence)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        got = []
        while not got or got[-1]["data"] != data:
            got += await self.events(1, max(0.01, deadline - loop.time()))
        return got

    async def send(self, frame: dict) -> None:
        await self.connection.send(json.dumps(frame))

    async def closed(self, within: float = 5.0) -> int | None:
        """Waits for the server to end the connection; returns the close code it sent (1006
        when the connection ended without a close frame)."""
        await bounded(asyncio.shield(self._reader), within, "the server to close the WebSocket")
        await bounded(self.connection.wait_closed(), within, "the TCP connection to close")
        return self.connection.close_code

    def abort(self) -> None:
        """Drops the TCP connection without a close frame, as a vanished client does."""
        self.connection.transport.abort()

    async def close(self) -> None:
        if self.open:
            await self.connection.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class SseClient:
    """An EventSource-like reader over a streamed httpx response. A background reader parses
    the stream into messages ({"event", "id", "data"}, data decoded as JSON)."""

    def __init__(self, client: httpx.AsyncClient, response: httpx.Response) -> None:
        self.client = client
        self.response = response
        self.lines: list[str] = []  # every line, as sent
        self.pings = 0
        self.messages: asyncio.Queue[dict] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        message: dict = {}
        try:
            async for line in self.response.aiter_lines():
                self.lines.append(line)
                if line == "":
                    if "data" in message:
                        message["data"] = json.loads(message["data"])
                        self.messages.put_nowait(message)
                    message = {}
                elif line.startswith(":"):
                    if line == ": ping":
                        self.pings += 1
                else:
                    name, _, value = line.partition(":")
                    message[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass

    @property
    def open(self) -> bool:
        return not self._reader.done()

    async def next_message(self, within: float = 5.0) -> dict:
        return await bounded(self.messages.get(), within, "the next SSE message")

    async def welcome(self, within: float = 5.0) -> dict:
        message = await self.next_message(within)
        assert message.get("event") == "welcome", message
        return message["data"]

    async def events(self, count: int, within: float = 10.0) -> list[dict]:
        """The event JSON of the next `count` messages, each of which must be an event."""
        return [m["data"] for m in await self.event_messages(count, within)]

    async def event_messages(self, count: int, within: float = 5.0) -> list[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        got = []
        while len(got) < count:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"got {len(got)} of {count} events within {within}s: {got}")
            message = await self.next_message(left)
            assert message["data"].get("type") == "event", f"expected an event, got {message}"
            got.append(message)
        return got

    async def until(self, data, within: float = 5.0) -> list[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        got = []
        while not got or got[-1]["data"] != data:
            got += await self.events(1, max(0.01, deadline - loop.time()))
        return got

    async def ended(self, within: float = 5.0) -> None:
        """Waits for the server to end the stream."""
        await bounded(asyncio.shield(self._reader), within, "the server to end the SSE stream")

    async def close(self) -> None:
        """Closes the connection (the body is unread, so httpx drops the socket)."""
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.response.aclose()
        await self.client.aclose()


@dataclass
class Refused:
    """How a subscribe request was refused: WebSocket close code and last frame, or HTTP."""

    code: int | None = None
    frames: list[dict] = field(default_factory=list)
    status: int | None = None
    headers: httpx.Headers | None = None
    body: dict | None = None


async def ws_connect(
    base_ws_url: str,
    key: str | None = None,
    *,
    answer_pings: bool | str = True,
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    **params: str | None,
) -> WsClient:
    """Opens a WebSocket subscription on a hub (`ws://host:port`), with the key as a Bearer
    header when given."""
    all_headers = dict(headers or {})
    if key:
        all_headers.update(bearer(key))
    connection = await websockets.connect(
        f"{base_ws_url}/ws/v1/events{query(**params)}",
        additional_headers=all_headers,
        origin=origin,
        # The app watches its own JSON frames only; protocol-level pings are off so that a
        # silent client is really silent.
        ping_interval=None,
        proxy=None,
        open_timeout=5,
        close_timeout=2,
    )
    return WsClient(connection, answer_pings=answer_pings)


async def sse_open(
    base_url: str, key: str | None = None, *, headers: dict[str, str] | None = None, **params
) -> SseClient:
    """Makes an SSE subscribe request and returns its client whatever the answer: its
    `response.status_code` says whether the stream was accepted (200)."""
    all_headers = dict(headers or {})
    if key:
        all_headers.update(bearer(key))
    client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=None), trust_env=False)
    request = client.build_request(
        "GET", f"{base_url}/sse/v1/events{query(**params)}", headers=all_headers
    )
    try:
        response = await bounded(client.send(request, stream=True), 10, "the SSE response")
    except BaseException:
        await client.aclose()
        raise
    return SseClient(client, response)


async def publish(client: httpx.AsyncClient, base_url: str, key: str, topic: str, data) -> dict:
    response = await client.post(
        f"{base_url}/api/v1/events",
        json={"topic": topic, "data": data},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 202, response.text
    return response.json()


async def scrape(client: httpx.AsyncClient, base_url: str) -> dict[str, float]:
    """A server's /metrics, each sample by its name and labels as Prometheus prints them
    (`eventhub_connections{transport="sse"}`, `process_resident_memory_bytes`)."""
    response = await client.get(f"{base_url}/metrics")
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
