"""Provides real network clients for end-to-end tests: WebSocket and SSE subscribers that
collect what they receive, with bounded waits."""

import asyncio
import contextlib
import json
from urllib.parse import urlencode

import httpx
import websockets


class WsSubscriber:
    def __init__(self, connection) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, base_ws_url: str, key: str, **params: str) -> "WsSubscriber":
        query = f"?{urlencode(params)}" if params else ""
        connection = await websockets.connect(
            f"{base_ws_url}/ws/v1/events{query}",
            additional_headers={"Authorization": f"Bearer {key}"},
            ping_interval=None,
        )
        return cls(connection)

    async def next_frame(self, within: float = 5.0) -> dict:
        """The next frame other than a ping (answered, as a client should)."""
        while True:
            frame = json.loads(await asyncio.wait_for(self.connection.recv(), within))
            if frame.get("type") == "ping":
                # A close may already be under way; frames sent before it are still read.
                with contextlib.suppress(websockets.ConnectionClosed):
                    await self.connection.send('{"type": "pong"}')
                continue
            return frame

    async def events(self, count: int, within: float = 10.0) -> list[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        got = []
        while len(got) < count:
            frame = await self.next_frame(max(0.01, deadline - loop.time()))
            if frame["type"] == "event":
                got.append(frame)
        return got

    async def close(self) -> None:
        await self.connection.close()


class SseSubscriber:
    """An EventSource-like reader over httpx streaming."""

    def __init__(self, client: httpx.AsyncClient, response: httpx.Response) -> None:
        self.client = client
        self.response = response
        self._lines = response.aiter_lines()

    @classmethod
    async def connect(
        cls, base_url: str, key: str, headers: dict | None = None, **params: str
    ) -> "SseSubscriber":
        client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
        query = f"?{urlencode(params)}" if params else ""
        request = client.build_request(
            "GET",
            f"{base_url}/sse/v1/events{query}",
            headers={"Authorization": f"Bearer {key}", **(headers or {})},
        )
        response = await client.send(request, stream=True)
        return cls(client, response)

    async def next_message(self, within: float = 5.0) -> dict:
        """The next SSE message as {"event", "id", "data"} (comments and retry skipped)."""
        message: dict = {}
        while True:
            line = await asyncio.wait_for(anext(self._lines), within)
            if line == "":
                if "data" in message:
                    message["data"] = json.loads(message["data"])
                    return message
                message = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            message[field] = value[1:] if value.startswith(" ") else value

    async def events(self, count: int, within: float = 10.0) -> list[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        got = []
        while len(got) < count:
            message = await self.next_message(max(0.01, deadline - loop.time()))
            if message.get("event") != "welcome":
                got.append(message["data"])
        return got

    async def close(self) -> None:
        await self.response.aclose()
        await self.client.aclose()


async def publish(client: httpx.AsyncClient, base_url: str, key: str, topic: str, data) -> dict:
    response = await client.post(
        f"{base_url}/api/v1/events",
        json={"topic": topic, "data": data},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 202, response.text
    return response.json()
