"""Provides AsyncClient, the asyncio client: the same operations as Client as coroutines, and
`subscribe()` over WebSocket or Server-Sent Events."""

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import httpx

from eventhub_client import _http
from eventhub_client.errors import api_error
from eventhub_client.subscription import GapCallback, Subscription, TokenSource


class AsyncClient:
    """A client for asyncio code: publishers (with `key`) and subscribers (with `key`, or with
    `token`: a subscriber token, or a function, plain or async, returning one — a string or the
    JSON of `POST /api/v1/tokens` — called before each connection and before the token expires).

    >>> async with AsyncClient("http://127.0.0.1:8000", key="ehk_...") as hub:
    ...     async for event in hub.subscribe(["orders.*"]):
    ...         print(event["seq"], event["data"])
    """

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        token: TokenSource | None = None,
        timeout: float = 10.0,
        retry: _http.RetryPolicy | None = None,
        max_batch: int = _http.MAX_BATCH,
        max_batch_bytes: int = _http.MAX_BATCH_BYTES,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if key is None and token is None:
            raise ValueError("AsyncClient needs a key or a token")
        self.url = url.rstrip("/")
        self.key = key
        self.token_source = token
        self.retry = retry or _http.RetryPolicy()
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout, trust_env=False)
        self._headers = _http.auth_headers(key)

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def publish(
        self,
        topic: str,
        data: Any,
        type: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """As Client.publish."""
        return await self._send(
            "/api/v1/events", _http.event_body(topic, data, type), idempotency_key
        )

    async def publish_batch(
        self,
        events: Iterable[Mapping[str, Any] | tuple],
        idempotency_key: str | None = None,
    ) -> list[dict[str, Any]]:
        """As Client.publish_batch."""
        accepted: list[dict[str, Any]] = []
        chunks = _http.batch_chunks(_http.batch_items(events), self.max_batch, self.max_batch_bytes)
        for index, chunk in enumerate(chunks):
            key = f"{idempotency_key}:{index}" if idempotency_key else None
            body = await self._send("/api/v1/events/batch", {"events": chunk}, key)
            accepted += body["events"]
        return accepted

    async def history(
        self, topic: str | None = None, after: str | None = None, *, page_size: int = 1000
    ) -> AsyncIterator[dict[str, Any]]:
        """As Client.history, an async iterator: `async for event in hub.history(...)`."""
        url: str | None = f"{self.url}/api/v1/events"
        params: dict[str, str] | None = _http.history_params(topic, after, page_size)
        while url:
            response = await self._http.get(url, params=params, headers=self._headers)
            page = _http.checked(response, 200)
            for event in page["results"]:
                yield event
            url, params = page["next"], None

    async def token(
        self,
        topics: Iterable[str] | str,
        ttl: int = 3600,
        user: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """As Client.token."""
        body = _http.token_body(topics, ttl, user, info)
        response = await self._http.post(
            f"{self.url}/api/v1/tokens", json=body, headers=self._headers
        )
        return _http.checked(response, 201)

    async def revoke_token(self, token_id: str) -> None:
        """As Client.revoke_token."""
        response = await self._http.delete(
            f"{self.url}/api/v1/tokens/{token_id}", headers=self._headers
        )
        _http.checked(response, 204)

    def subscribe(
        self,
        topics: Iterable[str] | str = "*",
        last_event_id: str | None = None,
        transport: str = "websocket",
        *,
        on_gap: GapCallback | None = None,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
        buffer: int = 1000,
    ) -> Subscription:
        """Subscribes to topic patterns; returns a Subscription, an async iterator of event
        objects (`{"type": "event", "id", "seq", "topic", "event", "data", "ts"}`).

        It answers the hub's pings, reconnects with exponential backoff and jitter (from
        `min_delay` to `max_delay` seconds) and resumes from the last event id, dropping any
        event already seen, so that no event is missed or repeated across drops and restarts.
        When the hub cannot replay a gap (welcome `recovered: false`), `on_gap(last_event_id,
        welcome)` is called (awaited when it is a coroutine function) before the events that
        follow the gap; without `on_gap` the iterator raises EventsMissed, and the subscription
        may be iterated again. A refusal reconnecting cannot mend raises SubscriptionClosed.
        """
        if transport not in ("websocket", "sse"):
            raise ValueError('transport is "websocket" or "sse"')
        return Subscription(
            url=self.url,
            key=self.key,
            token=self.token_source,
            topics=[topics] if isinstance(topics, str) else list(topics),
            last_event_id=last_event_id,
            transport=transport,
            on_gap=on_gap,
            min_delay=min_delay,
            max_delay=max_delay,
            buffer=buffer,
        )

    async def _send(self, path: str, body: dict[str, Any], key: str | None) -> Any:
        headers = dict(self._headers, **{"Idempotency-Key": key or _http.new_idempotency_key()})
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.post(f"{self.url}{path}", json=body, headers=headers)
            except httpx.TransportError:
                # Safe to send again: the Idempotency-Key makes a second arrival a replay.
                delay = self.retry.delay(attempt, None)
                if waited + delay > self.retry.total_wait:
                    raise
            else:
                if response.status_code == 202:
                    return response.json()
                after = _http.retry_after(response)
                delay = self.retry.delay(attempt, after)
                if (
                    response.status_code not in _http.RETRIED
                    or waited + delay > self.retry.total_wait
                ):
                    raise api_error(response.status_code, _http.body_of(response), after)
            await asyncio.sleep(delay)
            waited += delay
